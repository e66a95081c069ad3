"""Waiting with a deadline that a cancellation always ends.

On Python 3.11 `asyncio.wait_for` returns the result, and forgets the cancellation, when what it
awaits finishes in the same loop turn as its task is cancelled (fixed in 3.12): a loop around it
then never stops, and whoever waits for that task to end hangs. `asyncio.timeout` has no such gap,
so every deadline here uses it (`ruff` refuses `asyncio.wait_for`).
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set (True) or `seconds` pass (False)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()
