"""The long-running apply worker: JetStream pull consumer → validate → apply → commit → ack.

Messages arrive as they are stored (`backend.ingest.pull`); validating them overlaps with applying
the current batch (it fills the time the worker waits for Postgres, in small chunks so as never to
hold up its next statement). Whatever arrived meanwhile is applied next as one batch, up to `batch`
messages: a nearly empty stream gives small batches applied at once, a backlog full ones, and no
batch queues behind another. A batch is applied in one transaction and acknowledged only after
commit, so a crash redelivers it and the inbox turns the redelivery into duplicates. A message that
cannot be applied becomes a failure and is acknowledged: a poison message never blocks the stream.
A message refused for personal data is erased from the stream once its redacted failure is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import NamedTuple, TypeVar
from uuid import UUID

import asyncpg
import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from opentelemetry.trace import Span, SpanKind

from backend import metrics
from backend.failures.services import failure_changed, record_inbound
from backend.ingest.apply import Outcome, apply_events, failure_key, prepare
from backend.ingest.own_events import is_signed
from backend.ingest.pull import PullFeed
from backend.ingest.validate import DEFAULT_TRUST, Accepted, Rejected, Trust, rejected_event, validate
from backend.live.bus import Announcements, LiveBus
from backend.messaging import APPLY_CONSUMER, EVENTS_STREAM
from backend.routing.rules import RuleSet
from switchboard import tracing
from switchboard.events import RESERVED_SYSTEMS

log = logging.getLogger(__name__)

# Worth retrying the whole batch: another replica held a lock we needed.
_CONTENTION = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError, asyncpg.LockNotAvailableError)
# The database itself is unreachable, or refuses every write for now (read-only while a replica is promoted):
# keep the messages unacknowledged and wait. (A cancelled query is not here: a statement timeout cancels the
# same heavy batch every time, and one event at a time gets past it.)
_UNAVAILABLE = (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                asyncpg.ConnectionDoesNotExistError,
                asyncpg.AdminShutdownError, asyncpg.TooManyConnectionsError, TimeoutError,
                asyncpg.ReadOnlySQLTransactionError)

_CONTENTION_RETRIES = 8
_NO_SUCH_MESSAGE = 10037  # JetStream's "no message found"
# Validation runs while the worker waits for Postgres, in chunks this small (in messages and in bytes, a
# message at least): one long run of it would hold up the worker's next statement (its answer waits for the
# event loop), the websockets and every request, and the worker is the pipeline's bottleneck.
_CLASSIFY_CHUNK = 50
_CLASSIFY_CHUNK_BYTES = 64 * 1024
_T = TypeVar("_T")
OnApplied = Callable[[Outcome], Awaitable[None]]
AcceptedEvents = list[Accepted]
RejectedMessages = list[tuple[Rejected, str]]


class _Fetched(NamedTuple):
    msgs: list[Msg]
    accepted: AcceptedEvents
    rejected: RejectedMessages


class _Ahead:
    """Fetched and validated messages waiting for the worker (at most `limit`), taken all at once up to a
    batch."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: deque[_Fetched] = deque()
        self._count = 0
        self._changed = asyncio.Event()
        self._broken: BaseException | None = None  # why the fetcher stopped: the worker raises it, not waits

    def fail(self, reason: BaseException) -> None:
        self._broken = reason
        self._changed.set()

    async def put(self, fetched: _Fetched) -> None:
        while self._count >= self.limit:
            self._changed.clear()
            await self._changed.wait()
        self._waiting.append(fetched)
        self._count += len(fetched.msgs)
        self._changed.set()

    async def take(self, most: int) -> _Fetched:
        while not self._waiting:
            if self._broken is not None:
                raise self._broken
            self._changed.clear()
            await self._changed.wait()
        taken = [self._waiting.popleft()]
        size = len(taken[0].msgs)
        while self._waiting and size + len(self._waiting[0].msgs) <= most:
            taken.append(self._waiting.popleft())
            size += len(taken[-1].msgs)
        self._count -= size
        self._changed.set()
        return _Fetched([m for f in taken for m in f.msgs], [a for f in taken for a in f.accepted],
                        [r for f in taken for r in f.rejected])


def _chunks(msgs: list[Msg]) -> Iterator[list[Msg]]:
    """`msgs` in order, in runs of at most `_CLASSIFY_CHUNK` messages and (but for a single one)
    `_CLASSIFY_CHUNK_BYTES`."""
    chunk: list[Msg] = []
    size = 0
    for msg in msgs:
        if chunk and (len(chunk) == _CLASSIFY_CHUNK or size + len(msg.data) > _CLASSIFY_CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(msg)
        size += len(msg.data)
    if chunk:
        yield chunk


def _split_subject(subject: str) -> tuple[str | None, str | None, str | None]:
    """(system, type, site) of `svc.events.<system>.<type>[.<site>]`: every type has two tokens, and a
    site-limited connector's subject adds the site (which may hold dots) after them."""
    parts = subject.split(".", 5)
    if len(parts) < 4:
        return None, None, None
    return parts[2], ".".join(parts[3:5]), parts[5] if len(parts) == 6 else None


def stream_key_prefix(stream: str, made: datetime | None) -> str:
    """How the failure key of a message of `stream` begins; its sequence follows. Keyed by the sequence, a
    redelivery is the same failure; by when the stream was made too, since a stream made again numbers from
    1 and its message N is another."""
    return f"nats:{stream}:{made.timestamp():.6f}:" if made else f"nats:{stream}:"


class ApplyWorker:
    def __init__(self, nc: NATS, pool: asyncpg.Pool, *, bus: LiveBus, rules: RuleSet, batch: int,
                 max_bytes: int, known_systems: frozenset[str], on_applied: OnApplied | None = None,
                 stream: str = EVENTS_STREAM, durable: str = APPLY_CONSUMER,
                 own_events_key: bytes | None = None, trust: Trust = DEFAULT_TRUST) -> None:
        self.nc = nc
        self.stream = stream
        self.durable = durable
        self.handled = 0
        self.pool = pool
        self.bus = bus  # failures recorded or resolved by a batch are announced once it commits
        self.rules = rules
        self.batch = batch
        self.max_bytes = max_bytes
        self.known_systems = known_systems
        self.on_applied = on_applied
        self.own_events_key = own_events_key  # None: no message is taken for the backend's own
        self.trust = trust
        self._keep_connection = False
        self._held: asyncpg.Connection | None = None
        self._key_prefix = stream_key_prefix(stream, None)

    async def run_forever(self) -> None:
        """`run`, restarted after anything unexpected: the worker outlives a bad moment."""
        while True:
            try:
                await self.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("apply worker stopped unexpectedly; restarting in 1s")
                await asyncio.sleep(1)

    async def run(self) -> None:
        made = (await self.nc.jetstream().stream_info(self.stream)).created
        self._key_prefix = stream_key_prefix(self.stream, made)
        feed = PullFeed(self.nc, self.stream, self.durable, self.batch)
        ahead = _Ahead(limit=2 * self.batch)

        async def fetch_loop() -> None:
            try:
                while True:
                    for chunk in _chunks(await feed.take()):
                        await ahead.put(_Fetched(chunk, *self.classify(chunk)))
                        await asyncio.sleep(0)  # the worker's next step first, if Postgres answered meanwhile
            except Exception as exc:
                ahead.fail(exc)  # the worker stops with it (and restarts) instead of waiting for ever
                raise

        self._keep_connection = True
        fetcher: asyncio.Task[None] | None = None
        try:
            await self._ready_connection()
            await feed.start()
            fetcher = asyncio.create_task(fetch_loop(), name="apply-fetch")
            while True:
                batch = await ahead.take(self.batch)
                await self.handle(batch.msgs, batch.accepted, batch.rejected)
        finally:
            if fetcher is not None:
                fetcher.cancel()
            self._keep_connection = False
            await self._drop_connection()
            await feed.stop()

    async def _ready_connection(self) -> None:
        """Take, plan and prepare the worker's connection before the first message is asked for; with the
        database down the first batch tries again (and hands its messages back)."""
        try:
            await self._hold()
        except _UNAVAILABLE as exc:
            log.warning("database unavailable at start (%s); the first batch will try again",
                        type(exc).__name__)

    def classify(self, msgs: list[Msg]) -> tuple[AcceptedEvents, RejectedMessages]:
        accepted: AcceptedEvents = []
        rejected: RejectedMessages = []
        arrived: Counter[tuple[str, str]] = Counter()
        for msg in msgs:
            system, type_, site = _split_subject(msg.subject)
            arrived[(metrics.type_label(type_), metrics.system_label(system, self.known_systems))] += 1
            signed = (system in RESERVED_SYSTEMS and self.own_events_key is not None
                      and is_signed(self.own_events_key, msg.data, msg.headers))
            result = validate(msg.data, max_bytes=self.max_bytes, known_systems=self.known_systems,
                              subject_system=system, subject_type=type_, signed_by_backend=signed,
                              trust=self.trust,
                              # the subject's site token is what NATS let this publisher use: data.site must
                              # match
                              allowed_sites=None if site is None else frozenset((site,)))
            if isinstance(result, Accepted):
                accepted.append(result)
            else:
                rejected.append((result, f"{self._key_prefix}{msg.metadata.sequence.stream}"))
        for (type_label, system_label), n in arrived.items():
            metrics.EVENTS_IN.labels(type_label, system_label).inc(n)
        return accepted, rejected

    async def handle(self, msgs: list[Msg], accepted: AcceptedEvents, rejected: RejectedMessages) -> None:
        """Apply `msgs` (`classify`'s `accepted` and `rejected`), commit, then acknowledge them."""
        started = time.perf_counter()
        spans = _start_apply_spans(accepted) if tracing.enabled() else {}
        try:
            outcome, rejected = await self.apply_batch(accepted, rejected)
        except _UNAVAILABLE as exc:
            log.warning("database unavailable (%s); %d messages left for redelivery", type(exc).__name__,
                        len(msgs))
            await asyncio.gather(*(m.nak(delay=2) for m in msgs), return_exceptions=True)
            for span in spans.values():
                span.end()
            await asyncio.sleep(1)
            return
        if spans:
            outcome.traces = _end_apply_spans(spans, outcome)
        try:
            for msg in msgs:
                await msg.ack()
        except nats.errors.Error as exc:
            # committed but not acknowledged: JetStream redelivers and the inbox makes them duplicates
            log.warning("acknowledging failed (%s); the batch will be redelivered", type(exc).__name__)
        self.handled += len(msgs)
        await self._erase_personal(rejected)
        self._count(accepted, rejected, outcome)
        metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(msgs))
        if msgs:
            stored_at = msgs[0].metadata.timestamp.timestamp()
            metrics.INGEST_DELAY.observe(max(time.time() - stored_at, 0.0))
        if self.on_applied and outcome.applied:
            await self.on_applied(outcome)

    async def _erase_personal(self, rejected: RejectedMessages) -> None:
        """Erase (overwrite, not only delete) the messages refused for personal data, or too large to be read
        for it, now that their redacted failures are committed. One that cannot be erased now is still gone
        when the stream's age limit passes."""
        erasable = [key for failure, key in rejected if failure.kind == "pii_rejected" or failure.unread]
        sequences = [int(key.removeprefix(self._key_prefix)) for key in erasable
                     if key.startswith(self._key_prefix)]
        erased = await asyncio.gather(*(erase_message(self.nc, self.stream, seq) for seq in sequences),
                                      return_exceptions=True)
        if missed := sum(1 for e in erased if e is not True):
            log.warning("%d messages refused for personal data could not be erased yet", missed)

    async def apply_batch(self, accepted: AcceptedEvents, rejected: list[tuple[Rejected, str]],
                          ) -> tuple[Outcome, list[tuple[Rejected, str]]]:
        """Apply and record in one transaction; returns the outcome and every failure recorded."""

        async def apply_and_record(conn: asyncpg.Connection, announce: Announcements) -> Outcome:
            outcome = await self._apply(conn, announce, accepted)
            await record_inbound(conn, announce, rejected + outcome.refused)
            return outcome

        try:
            outcome = await self._transaction(apply_and_record)
            return outcome, rejected + outcome.refused
        except Exception as exc:  # whatever breaks a batch is found event by event
            if isinstance(exc, _UNAVAILABLE):
                raise
            log.warning("batch of %d failed to apply (%s %s); applying one by one", len(accepted),
                        type(exc).__name__, getattr(exc, "sqlstate", ""))
            return await self._apply_one_by_one(accepted, rejected)

    async def _apply_one_by_one(self, accepted: AcceptedEvents,
                                rejected: list[tuple[Rejected, str]],
                                ) -> tuple[Outcome, list[tuple[Rejected, str]]]:
        """Isolate the event that broke a batch: it becomes an `apply_error`, the others apply."""
        total = Outcome()
        failed = list(rejected)
        for each in accepted:
            try:
                one = await self._transaction(functools.partial(self._apply, batch=[each]))
            except Exception as exc:  # the event that breaks becomes its failure
                if isinstance(exc, _UNAVAILABLE):
                    raise
                event = each.event
                failed.append((rejected_event(event, "apply_error", f"{type(exc).__name__}: {exc}",
                                              each.scope),
                               failure_key(event)))
                continue
            total.add(one)
            failed.extend(one.refused)
        await self._transaction(functools.partial(record_inbound, rejected=failed))
        return total, failed

    async def _apply(self, conn: asyncpg.Connection, announce: Announcements,
                     batch: AcceptedEvents) -> Outcome:
        outcome = await apply_events(conn, batch, rules=self.rules)
        if outcome.failures:
            await failure_changed(conn, announce, outcome.failures)
        return outcome

    async def _transaction(self, work: Callable[[asyncpg.Connection, Announcements], Awaitable[_T]]) -> _T:
        """Run `work` in a transaction, again after a short jittered pause if another replica held a lock;
        what it announces goes out once it commits."""
        for attempt in range(_CONTENTION_RETRIES):
            try:
                async with self._connection() as conn, self.bus.after_commit(conn) as announce:
                    return await work(conn, announce)
            except _CONTENTION:
                if attempt == _CONTENTION_RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * 2**attempt * (1 + random.random()))  # noqa: S311 - jitter
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pool connection; while `run` runs, the same one from batch to batch, because handing a connection
        back costs a round trip (the pool resets its session). Given back once it may be broken."""
        if not self._keep_connection:
            async with self.pool.acquire() as conn:
                await _plan_once(conn)
                yield conn
            return
        held = await self._hold()
        try:
            yield held
        except asyncpg.PostgresError as exc:
            if isinstance(exc, _UNAVAILABLE):
                await self._drop_connection()
            raise
        except BaseException:
            await self._drop_connection()
            raise

    async def _hold(self) -> asyncpg.Connection:
        """The connection `run` keeps, taken, planned and prepared the first time it is asked for."""
        if self._held is None:
            conn = await self.pool.acquire()
            try:
                await _plan_once(conn)
                await prepare(conn)  # the first batch after a start waited tens of ms for its plans
            except BaseException:
                await self.pool.release(conn)
                raise
            self._held = conn
        return self._held

    async def _drop_connection(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            await self.pool.release(held)

    def _count(self, accepted: AcceptedEvents, rejected: list[tuple[Rejected, str]],
               outcome: Outcome) -> None:
        for (type_, system), n in outcome.applied_types.items():
            metrics.EVENTS_APPLIED.labels(type_, metrics.system_label(system, self.known_systems)).inc(n)
        for one in accepted:
            if one.dropped_fields:
                metrics.FIELDS_DROPPED.labels(one.event.type).inc(one.dropped_fields)
        metrics.count_failures((failure for failure, _ in rejected), self.known_systems)
        if outcome.duplicates:
            metrics.EVENTS_DUPLICATE.inc(outcome.duplicates)


async def _plan_once(conn: asyncpg.Connection) -> None:
    """Plan the apply statements once, not at every batch. Planned for their arrays' values, Postgres
    estimates every element against the column's statistics (a quarter of a 500-event batch's time in
    Postgres, a third of a small batch's) and, for a batch naming a few hundred stored journeys, may scan
    whole tables; the generic plans are index lookups, their cost bounded by the batch, not by what is
    stored. It holds until the pool's reset, when the worker gives the connection back."""
    await conn.execute("SET plan_cache_mode = force_generic_plan")


async def erase_message(nc: NATS, stream: str, seq: int) -> bool:
    """JetStream's message delete with erase: the stored bytes are overwritten, not only unlinked.

    The request is spelt out (`no_erase: false`) rather than left to a client library's default."""
    reply = await nc.request(f"$JS.API.STREAM.MSG.DELETE.{stream}",
                             msgspec.json.encode({"seq": seq, "no_erase": False}), timeout=5)
    answer = msgspec.json.decode(reply.data)
    # already gone (erased by another replica, or aged out) is as good as erased
    return bool(answer.get("success")) or answer.get("error", {}).get("err_code") == _NO_SUCH_MESSAGE


def _start_apply_spans(accepted: AcceptedEvents) -> dict[tuple[str, str], Span]:
    """An `apply` span, child of each sampled event's publish span, open until its batch commits."""
    return {
        (event.source, event.id): tracing.tracer().start_span(
            f"apply {event.type}", context=tracing.parent(event.traceparent or None), kind=SpanKind.CONSUMER,
            attributes={"cloudevents.event_source": event.source, "cloudevents.event_id": event.id})
        for event in (one.event for one in accepted) if tracing.is_sampled(event.traceparent or None)
    }


def _end_apply_spans(spans: dict[tuple[str, str], Span], outcome: Outcome) -> dict[UUID, str]:
    """End the spans; returns the `traceparent` each changed journey's live update continues."""
    traces: dict[UUID, str] = {}
    for key, span in spans.items():
        journey = outcome.traced_journeys.get(key)
        # False: a duplicate or not a journey event
        span.set_attribute("switchboard.applied", journey is not None)
        span.end()
        traceparent = tracing.traceparent_of(span)
        if journey is not None and traceparent:
            traces[journey] = traceparent
    return traces
