"""One client's socket: reads its messages, keeps its subscriptions, writes its outbox.

Three things run per socket: the receive loop (decode once, dispatch with `match`), the send loop
(the only writer: waits for the outbox and writes; when this client's TCP window is full only this
loop waits) and the session itself, which ends the other two when the client leaves, misbehaves,
falls too far behind or its token expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import msgspec
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from backend import metrics
from backend.auth import Principal
from backend.live.bus import ALL_SITES
from backend.live.hub import LiveHub, text_frame
from backend.live.outbox import Frame, Outbox, Overflow
from backend.live.schemas import (
    MAX_CLIENT_MESSAGE_BYTES,
    ClientMessage,
    Error,
    Ping,
    Pong,
    Snapshot,
    Subscribe,
    Topic,
    Unsubscribe,
)
from backend.live.sources import SnapshotReader
from switchboard.waits import stop_tasks

OUTBOX_LIMIT = 2000
# snapshots waiting for a client to read them: a few full sets of every topic, not what a client that keeps
# asking and never reads would pile up
SNAPSHOT_BYTES_LIMIT = 16 * 1024 * 1024
# client messages are rare (subscribe, ping): a sustained stream of them is abuse
RATE_PER_S = 5.0
BURST = 20
_CLOSE_TIMEOUT_S = 1.0

# why a session ended → the close code and reason sent (None: the client is gone or cannot be written to)
CLOSE: dict[str, tuple[int, str] | None] = {
    "client": None,
    "expired": (4401, "token expired"),
    "rate_limited": (4429, "too many messages"),
    "too_big": (1009, "message too big"),
    "slow": (4008, "too slow: reconnect with last_seq"),
    "shutdown": (1001, "server shutting down"),
    "resync": (1012, "live updates were interrupted: subscribe again"),
    "error": (1011, "internal error"),
}

log = logging.getLogger(__name__)
_decoder = msgspec.json.Decoder(ClientMessage)
_encode = msgspec.json.encode


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self, cost: int = 1) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


class LiveSession:
    def __init__(self, socket: WebSocket[Principal, Any, Any], hub: LiveHub, pool: asyncpg.Pool,
                 snapshots: dict[str, SnapshotReader]) -> None:
        self.socket = socket
        self.principal: Principal = socket.user
        self.hub = hub
        self.pool = pool
        self.snapshots = snapshots
        self.outbox = Outbox(OUTBOX_LIMIT, SNAPSHOT_BYTES_LIMIT)
        self.topics: dict[str, frozenset[str] | None] = {}
        # topics waiting for their snapshot: updates are held here so none goes out before it
        self.priming: dict[str, dict[str, Frame]] = {}
        self.bucket = TokenBucket(RATE_PER_S, BURST)
        self.ended: str | None = None
        self._done = asyncio.Event()

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
            self._done.set()

    def offer(self, topic: str, key: str, frame: Frame) -> None:
        """From the hub's fan-out: never waits, never raises."""
        if self.ended is not None:
            return
        try:
            held = self.priming.get(topic)
            if held is None:
                self.outbox.put(topic, key, frame)
                return
            held.pop(key, None)
            if len(held) >= OUTBOX_LIMIT:
                raise Overflow
            held[key] = frame
        except Overflow:
            self.end("slow")

    async def run(self) -> None:
        metrics.LIVE_CONNECTIONS.inc()
        tasks = [asyncio.create_task(self._receive_loop()), asyncio.create_task(self._send_loop())]
        try:
            async with asyncio.timeout(self._seconds_left()):
                await self._done.wait()
        except TimeoutError:
            self.end("expired")
        except asyncio.CancelledError:
            self.end("shutdown")
            raise
        finally:
            await stop_tasks(tasks)
            for topic, sites in self.topics.items():
                self.hub.unregister(self, topic, sites)
            metrics.LIVE_CONNECTIONS.dec()
            metrics.LIVE_DISCONNECTS.labels(self.ended or "client").inc()
            close = CLOSE.get(self.ended or "client")
            if close is not None:
                # a client that stopped reading may never take the close frame: give up after a while
                with contextlib.suppress(TimeoutError, OSError, WebSocketDisconnect, RuntimeError):
                    async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                        await self.socket.close(*close)

    def _seconds_left(self) -> float | None:
        expires_at = self.principal.expires_at
        return None if expires_at is None else max(0.0, (expires_at - datetime.now(UTC)).total_seconds())

    async def _send_loop(self) -> None:
        send = self.socket.send
        try:
            while True:
                frames = await self.outbox.take()
                for frame in frames:
                    await send(frame)  # type: ignore[arg-type]
                metrics.LIVE_DELIVERIES.inc(len(frames))
        except (WebSocketDisconnect, OSError, RuntimeError):
            self.end("client")  # uvicorn raises once the client is gone

    async def _receive_loop(self) -> None:
        try:
            while self.ended is None:
                received = cast("dict[str, Any]", await self.socket.receive())
                if received["type"] == "websocket.disconnect":
                    raise WebSocketDisconnect(detail="disconnect event", code=received.get("code", 1000))
                text, data = received.get("text"), received.get("bytes")
                if len(text if text is not None else data or b"") > MAX_CLIENT_MESSAGE_BYTES:
                    self.end("too_big")
                elif not self.bucket.take():
                    self.end("rate_limited")
                elif text is None:  # read as text it was empty, and its error said nothing useful
                    metrics.LIVE_CLIENT_ERRORS.inc()
                    self._control(Error(reason="a binary frame: send each message as a JSON text frame"))
                else:
                    await self._handle(text)
        except WebSocketDisconnect:
            self.end("client")
        except Exception:
            log.exception("live session failed")
            self.end("error")

    async def _handle(self, text: str) -> None:
        try:
            message = _decoder.decode(text)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            metrics.LIVE_CLIENT_ERRORS.inc()
            self._control(Error(reason=str(exc)[:200]))
            return
        match message:
            case Subscribe():
                await self._subscribe(message)
            case Unsubscribe(topics=topics):
                for topic in topics:
                    self._drop_topic(topic)
            case Ping():
                self._control(Pong())

    def _control(self, message: msgspec.Struct) -> None:
        self._put_control(text_frame(_encode(message)))

    def _put_control(self, frame: Frame) -> None:
        try:
            self.outbox.put_control(frame)
        except Overflow:
            self.end("slow")

    def _drop_topic(self, topic: str) -> None:
        if topic in self.topics:
            self.hub.unregister(self, topic, self.topics.pop(topic))
        self.priming.pop(topic, None)

    def _sites_for(self, requested: list[str] | None) -> frozenset[str] | None:
        allowed = self.principal.sites
        if requested is None:
            return allowed
        outside = sorted(set(requested) - allowed) if allowed is not None else []
        if outside:
            raise PermissionError(f"sites outside your sites: {', '.join(outside)}")
        return frozenset(requested)

    async def _subscribe(self, message: Subscribe) -> None:
        try:
            sites = self._sites_for(message.sites)
        except PermissionError as exc:
            metrics.LIVE_CLIENT_ERRORS.inc()
            self._control(Error(reason=str(exc)))
            return
        last_seq = message.last_seq or {}
        to_snapshot: list[tuple[Topic, int]] = []
        # no await from here to the snapshots: registration and history replay see the same `seq`
        for topic in dict.fromkeys(message.topics):
            self._drop_topic(topic)
            self.hub.register(self, topic, sites)
            self.topics[topic] = sites
            if topic in last_seq and self._replay(topic, last_seq[topic], message.epoch, sites):
                continue
            self.priming[topic] = {}
            to_snapshot.append((topic, self.hub.seq[topic]))
        if to_snapshot:
            # each snapshot is a read of the database: they cost the message rate, one per topic more
            if not self.bucket.take(len(to_snapshot)):
                self.end("rate_limited")
                return
            await self._send_snapshots(to_snapshot, sites)

    def _replay(self, topic: str, last_seq: int, epoch: str | None, sites: frozenset[str] | None) -> bool:
        """Queue what the client missed since `last_seq`; False when only a snapshot can catch it up."""
        entries = self.hub.missed(topic, last_seq, epoch)
        if entries is None:
            return False
        latest: dict[str, Frame] = {}
        for entry in entries:
            if sites is None or entry.site in sites or entry.site == ALL_SITES:
                latest.pop(entry.key, None)
                latest[entry.key] = entry.frame
        if len(latest) > OUTBOX_LIMIT - len(self.outbox.frames):
            return False
        for key, frame in latest.items():
            self.outbox.put(topic, key, frame)
        return True

    async def _send_snapshots(self, topics: list[tuple[Topic, int]], sites: frozenset[str] | None) -> None:
        site_list = None if sites is None else sorted(sites)
        async with self.pool.acquire() as conn:
            for topic, seq in topics:
                data = await self.snapshots[topic](conn, site_list)
                held = self.priming.pop(topic, None)
                if held is None:
                    continue  # unsubscribed meanwhile
                self._put_control(
                    text_frame(_encode(Snapshot(topic=topic, seq=seq, epoch=self.hub.epoch, data=data))))
                if self.ended is not None:
                    return
                for key, frame in held.items():
                    self.offer(topic, key, frame)
