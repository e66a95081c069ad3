"""Spool-backed JetStream publishing with a bounded number of acknowledgements in flight.

`emit` returns once events are committed to the spool. One sender task streams them to
`svc.events.<system>.<type>` with `publish_async` (acks are awaited as futures, never one at a
time), at most `max_in_flight` unacknowledged. An ack that fails or does not come in time, or a
lost connection, rewinds the sender to the oldest unacknowledged event; everything after it is
sent again with the same `Nats-Msg-Id`, which JetStream turns into duplicates it drops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Iterable

import msgspec
from nats.aio.client import Client as NATS
from nats.js.api import PubAck
from opentelemetry.trace import SpanKind

from connectors.sdk.spool import Spool
from switchboard import tracing
from switchboard.events import CloudEvent, nats_msg_id, nats_subject
from switchboard.waits import wait_set

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
READ_BATCH = 500


class Publisher:
    def __init__(self, spool: Spool, *, max_in_flight: int = 1000, ack_timeout: float = 5.0,
                 retry_delay: float = 0.5, sites: tuple[str, ...] = ()) -> None:
        self.spool = spool
        self.sites = sites  # a site-limited connector's: its site is the subject's last token
        self.max_in_flight = max_in_flight
        self.ack_timeout = ack_timeout
        self.retry_delay = retry_delay
        self.acked = 0
        self.duplicates = 0  # acks JetStream marked duplicate: resends of events it already had
        self._nc: NATS | None = None
        self._in_flight: dict[int, tuple[float, asyncio.Future[PubAck]]] = {}
        self._cursor = 0  # highest seq handed to NATS
        self._rewind_to: int | None = None  # after a failure: resend everything after this seq
        self._confirmed = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._paused = False  # logged once when publishing stops and once when it resumes

    def attach(self, nc: NATS) -> None:
        self._nc = nc
        self._js = nc.jetstream(publish_async_max_pending=self.max_in_flight)
        self._wake.set()

    async def emit(self, events: Iterable[CloudEvent]) -> None:
        """Store events durably; they are published in this order as soon as NATS can take them.

        With tracing on, each event that carries no `traceparent` yet starts a trace with its `publish` span.
        """
        events = [_traced(e) for e in events] if tracing.enabled() else list(events)
        if self.sites:
            self._check_sites(events)
        self.emit_raw([(nats_subject(e, with_site=bool(self.sites)), nats_msg_id(e.source, e.id), _encode(e))
                       for e in events])

    def _check_sites(self, events: list[CloudEvent]) -> None:
        """Refused here, before the spool: NATS would refuse its publish for ever, and the spool sends in
        order, so one such event would hold back every later one."""
        for event in events:
            site = getattr(event.data, "site", None)
            if site not in self.sites:
                raise ValueError(f"event {event.id} ({event.type}) is for site {site!r}: this connector's"
                                 f" profile publishes for {', '.join(self.sites)} only; none of these was"
                                 " spooled")

    def emit_raw(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Store already encoded messages as (subject, Nats-Msg-Id, body)."""
        self.spool.append(rows)
        self._drained.clear()
        self._wake.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until every stored event is acknowledged; False if `timeout` passes first."""
        return await wait_set(self._drained, timeout)

    async def run(self) -> None:
        watchdog = asyncio.create_task(self._watch_acks())
        try:
            await self._send_loop()
        finally:
            watchdog.cancel()

    async def _watch_acks(self) -> None:
        """Apart from the send loop, which may wait for a free slot that only an expired ack frees."""
        while True:
            await asyncio.sleep(self.ack_timeout / 4)
            self._expire_overdue()

    async def _send_loop(self) -> None:
        while True:
            if self._nc is None or not self._nc.is_connected:
                await self._idle(self.retry_delay)
                continue
            if self._rewind_to is not None:
                self._cursor, self._rewind_to = min(self._cursor, self._rewind_to), None
            rows = self.spool.read_after(self._cursor, READ_BATCH)
            if not rows:
                self._confirm()
                if not self._in_flight and self._rewind_to is None and self.spool.pending() == 0:
                    self._drained.set()
                await self._idle(0.05 if self._in_flight else 1.0)
                continue
            for seq, subject, msg_id, body in rows:
                if self._rewind_to is not None:
                    break
                try:
                    # no wait_stall: with one, every call yields to the loop and each message is flushed alone
                    future = await self._js.publish_async(subject, body, headers={"Nats-Msg-Id": msg_id})
                except Exception as exc:  # noqa: BLE001 - any refusal leaves the event spooled for a resend
                    if not self._paused:
                        log.warning("publishing paused (%s); events wait in the spool", type(exc).__name__)
                        self._paused = True
                    self._failed(seq - 1)
                    await asyncio.sleep(self.retry_delay)
                    break
                if (superseded := self._in_flight.get(seq)) is not None:
                    superseded[1].cancel()  # frees its slot; its callback sees it was replaced
                self._in_flight[seq] = (time.monotonic(), future)
                future.add_done_callback(functools.partial(self._settled, seq))
                self._cursor = seq
            self._confirm()

    async def _idle(self, seconds: float) -> None:
        await wait_set(self._wake, seconds)
        self._wake.clear()

    def _settled(self, seq: int, future: asyncio.Future[PubAck]) -> None:
        entry = self._in_flight.get(seq)
        if entry is None or entry[1] is not future:
            return  # superseded by a resend of the same event
        del self._in_flight[seq]
        if future.cancelled() or future.exception() is not None:
            self._failed(seq - 1)
            return
        self.acked += 1
        if self._paused:
            log.info("publishing resumed")
            self._paused = False
        if future.result().duplicate:
            self.duplicates += 1
        if not self._in_flight:
            self._wake.set()

    def _failed(self, after: int) -> None:
        self._rewind_to = after if self._rewind_to is None else min(self._rewind_to, after)
        self._wake.set()

    def _expire_overdue(self) -> None:
        """Give up on acks that did not come in time (a lost connection never answers them)."""
        deadline = time.monotonic() - self.ack_timeout
        overdue = [future for sent_at, future in self._in_flight.values() if sent_at < deadline]
        for future in overdue:
            future.cancel()

    def _confirm(self) -> None:
        """Delete from the spool everything up to the oldest event not yet acknowledged."""
        through = self._cursor if not self._in_flight else min(self._in_flight) - 1
        if self._rewind_to is not None:
            through = min(through, self._rewind_to)
        if through > self._confirmed:
            self.spool.confirm_through(through)
            self._confirmed = through


def _traced(event: CloudEvent) -> CloudEvent:
    with tracing.span(f"publish {event.type}", event.traceparent or None, SpanKind.PRODUCER,
                      {"cloudevents.event_source": event.source, "cloudevents.event_id": event.id}) as span:
        event.traceparent = tracing.traceparent_of(span) or event.traceparent
    return event
