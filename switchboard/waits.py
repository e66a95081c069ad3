"""Waiting with a deadline that a cancellation always ends, and stopping tasks for sure.

On Python 3.11 `asyncio.wait_for` returns the result, and forgets the cancellation, when what it
awaits finishes in the same loop turn as its task is cancelled (fixed in 3.12): a loop around it
then never stops, and whoever waits for that task to end hangs. `asyncio.timeout` has no such gap,
so every deadline here uses it (`ruff` refuses `asyncio.wait_for`). Libraries still use it (nats-py
for every request and flush), so a task is stopped by cancelling it until it ends (`stop_tasks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set (True) or `seconds` pass (False)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout_s: float = 5.0) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` again and again until each has ended, for at most `timeout_s`; returns those still
    running (each named in a warning). What a task ended with besides its cancellation is logged."""
    tasks = list(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = {task for task in tasks if not task.done()}
    while pending and (left := deadline - loop.time()) > 0:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.1, left))
    for task in tasks:
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            log.warning("task %s ended with %s", task.get_name(), type(error).__name__, exc_info=error)
    for task in pending:
        log.warning("task %s did not stop within %.0fs of being cancelled", task.get_name(), timeout_s)
    return pending
