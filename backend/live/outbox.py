"""A client's bounded, coalescing buffer of frames waiting to be written to its socket.

Updates are keyed by (topic, key): a newer update replaces the one still waiting for the same key
(latest per key), so a slow client costs at most `limit` frames of memory (and `control_bytes` of
snapshots) and never slows the fan-out, which only ever puts into outboxes. A client so far behind
that `limit` distinct keys are waiting is told to leave (`overflowed`): it reconnects with `last_seq`
and catches up from the history or a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from backend import metrics

Frame = dict[str, Any]  # an ASGI `websocket.send` event, built once per update and shared by clients


class Overflow(Exception):  # noqa: N818 - a state of the outbox, not a bug
    """More distinct keys are waiting than the outbox holds."""


class Outbox:
    def __init__(self, limit: int, control_bytes: int) -> None:
        self.limit = limit
        # snapshots are large: what may wait of them, counted in the frames' characters (their bytes, for
        # JSON that is ASCII)
        self.control_bytes = control_bytes
        self.frames: dict[tuple[str, Any], Frame] = {}
        self.ready = asyncio.Event()
        self._control_ids = itertools.count()
        self._control_waiting = 0

    def put(self, topic: str, key: Any, frame: Frame) -> None:
        """Queue a frame for `key`, replacing one still waiting for it; Overflow past the limit."""
        slot = (topic, key)
        if self.frames.pop(slot, None) is not None:
            metrics.LIVE_DROPPED.labels(topic).inc()
        elif len(self.frames) >= self.limit:
            raise Overflow
        # re-inserted at the end, so frames leave in `seq` order
        self.frames[slot] = frame
        self.ready.set()

    def put_control(self, frame: Frame) -> None:
        """Snapshots, errors and pongs: never coalesced; Overflow once more than `control_bytes` of them, or
        `limit` frames in all, would wait (a client that asks and does not read)."""
        size = len(frame.get("text") or frame.get("bytes") or "")
        if self._control_waiting + size > self.control_bytes or len(self.frames) >= self.limit:
            raise Overflow
        self._control_waiting += size
        self.frames[("", next(self._control_ids))] = frame
        self.ready.set()

    async def take(self) -> list[Frame]:
        """Wait for frames and take all of them, in order."""
        await self.ready.wait()
        self.ready.clear()
        frames, self.frames, self._control_waiting = self.frames, {}, 0
        return list(frames.values())
