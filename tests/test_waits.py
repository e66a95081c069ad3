"""A wait with a deadline ends when its task is cancelled, even as what it waits for arrives."""

import asyncio

from switchboard.waits import wait_set


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
