"""Waiting for what happens asynchronously, within the suite's one default."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

# what `eventually` polls; a lambda binding a loop variable as a default (`lambda n=n: ...`) is cast to it,
# mypy inferring no type for such a lambda
Check = Callable[[], Awaitable[Any]]


async def eventually(check: Check, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; its last value otherwise fails the test."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)
