"""A durable JetStream pull consumer kept flowing: one pull request always waits at the server.

nats-py's `fetch`, once the stream is empty, sends a waiting request and then (by its code) holds
the messages that arrive until the whole batch is there or its timeout ends (up to a second; a live
bench run once had a p99 of 484 ms), and it waits for every message with a timer of its own. Here the server
sends each message as soon as it is stored, the subscription's callback puts it in a buffer, and the worker
takes whatever is there (up to a batch) whenever it is free. The next request goes out as soon as the current
one is used up or ends, unless a batch already waits here: messages held here are not acknowledged yet, so the
buffer stays small (JetStream redelivers what waits past `ack_wait`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js.api import Header

from switchboard.waits import wait_set

log = logging.getLogger(__name__)

_HEARTBEAT = "100"
_ENDED = frozenset({"404", "408"})  # no messages / the request expired: ask again at once


class PullFeed:
    def __init__(self, nc: NATS, stream: str, durable: str, batch: int, *, expires_s: float = 1.0) -> None:
        self.nc = nc
        self.batch = batch
        self.expires_s = expires_s
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._buffer: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._outstanding = 0  # messages the request waiting at the server may still bring
        self._requested_at = 0.0
        self._paused_until = 0.0
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._inbox, cb=self._on_message)
        await self._request()

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()

    async def take(self) -> list[Msg]:
        """The messages buffered (at least one, at most a batch), in the order the server sent them."""
        while not self._buffer:
            self._arrived.clear()
            await wait_set(self._arrived, self.expires_s)
            if not self._buffer and time.monotonic() - self._requested_at > 2 * self.expires_s:
                # not even the request's expiry came back: the server lost it (a restart, a reconnect)
                self._outstanding = 0
                await self._request()
        msgs = [self._buffer.popleft() for _ in range(min(len(self._buffer), self.batch))]
        if self._outstanding == 0:
            await self._request()
        return msgs

    async def _on_message(self, msg: Msg) -> None:
        # a stored message has an ack subject; only the server's own answers to a pull request carry a status
        # (a publisher's header named `Status` lands in the same place, and must not hide its message)
        stored = msg.reply.startswith("$JS.ACK.")
        status = None if stored or not msg.headers else msg.headers.get(Header.STATUS)
        if status is None:
            self._buffer.append(msg)
            self._arrived.set()
            self._outstanding = max(self._outstanding - 1, 0)
            if self._outstanding == 0:
                await self._request()
        elif status != _HEARTBEAT:
            self._outstanding = 0
            if status not in _ENDED:
                # e.g. 409: the consumer was deleted or changed leader; do not spin on it
                log.warning("pull request ended (%s %s); asking again shortly", status,
                            msg.headers.get(Header.DESCRIPTION, "") if msg.headers else "")
                self._paused_until = time.monotonic() + 0.5
            await self._request()

    async def _request(self) -> None:
        """Ask for a batch, unless one is outstanding, a batch already waits here, or a pause is on."""
        if self._outstanding or len(self._buffer) >= self.batch or self._sub is None:
            return
        if time.monotonic() < self._paused_until:
            return  # `take` asks again once its wait times out
        self._outstanding = self.batch
        self._requested_at = time.monotonic()
        request = json.dumps({"batch": self.batch, "expires": int(self.expires_s * 1e9)}).encode()
        try:
            await self.nc.publish(self._subject, request, reply=self._inbox)
        except NatsError as exc:
            self._outstanding = 0  # `take` asks again after its wait
            log.warning("pull request not sent (%s)", type(exc).__name__)
