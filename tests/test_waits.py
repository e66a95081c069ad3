"""A wait with a deadline ends when its task is cancelled, even as what it waits for arrives."""

import asyncio
import contextlib

from switchboard.waits import stop_tasks, wait_set


async def _wake_forever(wake: asyncio.Event) -> None:
    while True:  # as the simulated floor and the connector's send loop do: only a cancellation ends it
        await wait_set(wake, 1.0)
        wake.clear()


async def test_a_cancellation_in_the_turn_the_event_is_set_ends_the_loop():
    wake = asyncio.Event()
    loop = asyncio.create_task(_wake_forever(wake))
    await asyncio.sleep(0.01)
    wake.set()
    await asyncio.sleep(0)  # the event's waiter is done; the wait around it has not run yet
    loop.cancel()
    done, _ = await asyncio.wait({loop}, timeout=3)
    assert done == {loop} and loop.cancelled()


async def test_the_answer_says_whether_the_event_came_or_the_time_ran_out():
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, 5) is True


async def _forgets_one_cancellation(wake: asyncio.Event) -> None:
    while True:  # as a loop around nats-py's request does: its own `asyncio.wait_for` may forget one
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), 1.0)  # noqa: TID251 - the library's behaviour, on purpose
        wake.clear()


async def test_stopping_tasks_cancels_until_each_ends_even_one_that_forgot_a_cancellation():
    wake = asyncio.Event()
    forgetful = asyncio.create_task(_forgets_one_cancellation(wake))
    quick = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0.01)
    wake.set()
    await asyncio.sleep(0)  # the cancellation below comes in the turn the awaited event fires
    assert await stop_tasks([forgetful, quick], timeout_s=5) == set()
    assert forgetful.cancelled() and quick.cancelled()


async def test_a_task_that_will_not_stop_is_given_back_once_the_time_is_up():
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await stop_tasks([task], timeout_s=0.3) == {task}
    stop.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)
    assert task.done()
