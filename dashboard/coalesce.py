"""At most a few renders a second per widget, however fast the changes behind it arrive.

A change only marks the widget dirty; the render runs at the next free slot of its interval with
the state as it is then, so a burst of a thousand updates costs one render, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# four renders a second per widget is as fast as anyone reads a board
MIN_INTERVAL_S = 0.25


class Coalescer:
    def __init__(self, render: Callable[[], None], min_interval_s: float = MIN_INTERVAL_S) -> None:
        self.render = render
        self.min_interval_s = min_interval_s
        self.renders = 0
        self._last = float("-inf")
        self._pending: asyncio.TimerHandle | None = None
        self._closed = False

    def changed(self) -> None:
        """Something behind the widget changed: render soon, at most once per interval."""
        if self._pending is not None or self._closed:
            return
        delay = max(0.0, self._last + self.min_interval_s - time.monotonic())
        self._pending = asyncio.get_running_loop().call_later(delay, self._flush)

    def close(self) -> None:
        self._closed = True
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _flush(self) -> None:
        self._pending = None
        if self._closed:
            return
        self._last = time.monotonic()
        self.renders += 1
        try:
            self.render()
        except Exception:  # a broken widget must not stop the others sharing the live connection
            log.exception("render failed")


class LatestRead:
    """Of reads a widget asks for one after another (its first, a filter pressed meanwhile), only the last
    one asked for is shown, whichever answers last: `still = latest.ask()`, then after the read, show its
    answer only if `still()`."""

    def __init__(self) -> None:
        self._asked = 0

    def ask(self) -> Callable[[], bool]:
        self._asked += 1
        asked = self._asked
        return lambda: asked == self._asked
