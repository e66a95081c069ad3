"""The replica's hub: receives every update, from the other replicas on `svc.live.>` and from its own
`LiveBus` directly, numbers it per topic, keeps a bounded history for resume, and puts it into the
outboxes of the clients that may see its site.

Fan-out never awaits a client: it only puts into outboxes, so one slow client never delays others.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Protocol

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry.trace import SpanKind

from backend import metrics
from backend.live.bus import ALL_SITES, SUBJECT_PREFIX, TRACEPARENT
from backend.live.outbox import Frame
from backend.live.schemas import TOPICS, BusUpdate, Update
from switchboard import tracing

log = logging.getLogger(__name__)

HISTORY_PER_TOPIC = 5000

_bus_decoder = msgspec.json.Decoder(BusUpdate)
_encode = msgspec.json.encode


class Subscriber(Protocol):
    def offer(self, topic: str, key: str, frame: Frame) -> None: ...

    def end(self, reason: str) -> None: ...


class Entry(msgspec.Struct, array_like=True):
    seq: int
    site: str | None
    key: str
    frame: Frame


def text_frame(payload: bytes) -> Frame:
    return {"type": "websocket.send", "text": payload.decode(), "bytes": None}


class LiveHub:
    def __init__(self, nc: NATS, *, history: int = HISTORY_PER_TOPIC) -> None:
        self.nc = nc
        # seq numbers are this replica's; a client resuming elsewhere sees another epoch and gets a snapshot
        self.epoch = secrets.token_hex(8)
        self.seq: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self.history: dict[str, deque[Entry]] = {t: deque(maxlen=history) for t in TOPICS}
        self._by_site: dict[tuple[str, str], set[Subscriber]] = defaultdict(set)
        self._every_site: dict[str, set[Subscriber]] = defaultdict(set)
        self._scoped: dict[str, set[Subscriber]] = defaultdict(set)  # those in `_by_site`, once each
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.nc.subscribe(SUBJECT_PREFIX + ">", cb=self._on_bus)

    def resync(self) -> None:
        """The bus was lost for a while: what other replicas published meanwhile never came (core NATS keeps
        nothing). A new epoch, so that no client resumes across the gap, and every client is sent to
        subscribe again: its snapshot is whole."""
        self.epoch = secrets.token_hex(8)
        for history in self.history.values():
            history.clear()
        subscribers = {s for group in (self._every_site, self._by_site) for subs in group.values()
                       for s in subs}
        log.warning("live bus back after an outage: %d clients subscribe again", len(subscribers))
        for subscriber in subscribers:
            subscriber.end("resync")

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def _on_bus(self, msg: Msg) -> None:
        topic = msg.subject.removeprefix(SUBJECT_PREFIX)
        if topic not in self.seq:
            return  # a topic this release does not serve
        try:
            update = _bus_decoder.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("ignored a malformed live update on %s", msg.subject)
            return
        self.deliver(topic, update, msg.headers.get(TRACEPARENT) if msg.headers else None)

    def deliver(self, topic: str, update: BusUpdate, traceparent: str | None) -> None:
        """An update from the bus: another replica's, or this one's, handed over directly (`LiveBus`)."""
        if traceparent and tracing.enabled():
            with tracing.span("websocket push", traceparent, SpanKind.CONSUMER, {"switchboard.topic": topic}):
                self.fan_out(topic, update)
            return
        self.fan_out(topic, update)

    def fan_out(self, topic: str, update: BusUpdate) -> None:
        seq = self.seq[topic] = self.seq[topic] + 1
        frame = text_frame(
            _encode(Update(topic=topic, seq=seq, site=update.site, key=update.key, data=update.data))
        )
        self.history[topic].append(Entry(seq, update.site, update.key, frame))
        metrics.LIVE_UPDATES.labels(topic).inc()
        for subscriber in self._every_site.get(topic, ()):
            subscriber.offer(topic, update.key, frame)
        if update.site == ALL_SITES:
            scoped = self._scoped.get(topic, ())
        elif update.site is not None:
            scoped = self._by_site.get((topic, update.site), ())
        else:
            return
        for subscriber in scoped:
            subscriber.offer(topic, update.key, frame)

    def register(self, subscriber: Subscriber, topic: str, sites: frozenset[str] | None) -> None:
        """Start delivering `topic` for `sites` (None: every site) to `subscriber`."""
        if sites is None:
            self._every_site[topic].add(subscriber)
            return
        self._scoped[topic].add(subscriber)
        for site in sites:
            self._by_site[(topic, site)].add(subscriber)

    def unregister(self, subscriber: Subscriber, topic: str, sites: frozenset[str] | None) -> None:
        if sites is None:
            self._every_site[topic].discard(subscriber)
            return
        self._scoped[topic].discard(subscriber)
        for site in sites:
            subscribers = self._by_site.get((topic, site))
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._by_site[(topic, site)]

    def missed(self, topic: str, last_seq: int, epoch: str | None) -> Iterable[Entry] | None:
        """The updates after `last_seq`, or None when the history no longer holds all of them."""
        current = self.seq[topic]
        if epoch != self.epoch or last_seq > current:
            return None
        entries = self.history[topic]
        oldest = entries[0].seq if entries else current + 1
        if last_seq + 1 < oldest:
            return None
        return (e for e in entries if e.seq > last_seq)
