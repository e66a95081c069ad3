"""Apply a batch of validated events to Postgres in the caller's transaction.

Set-based, and three statements per batch whatever its size (a round trip each, which is what a
small batch costs): claim the events, resolve and lock their journeys, write everything. Only a
batch that joins journeys already stored adds the statements that re-point their rows.
Concurrency across replicas: advisory locks on every reference and event key the batch touches
(taken in sorted order), then row locks on the journeys those references resolve to. Two replicas
applying events of the same journey therefore serialise on it, and a reference is never given two
journeys.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import msgspec

from backend.commands import lifecycle
from backend.commands.outbox import planned_commands, record_answers, unanswerable
from backend.db import lock_key
from backend.ingest.validate import Accepted, Rejected, rejected_event
from backend.integrations import traffic
from backend.journeys.merge import FINAL_STAGES, JourneyState, copy, fold, merge
from backend.journeys.schemas import Journey, JourneyMerged
from backend.journeys.views import journey_view
from backend.routing.rules import RuleSet
from switchboard.events import (
    MAX_JOURNEY_REFS,
    MAX_SITE_AUTHORITIES,
    CapacityChanged,
    CloudEvent,
    CommandResult,
    ConnectorHeartbeat,
    refs_of,
)

_E = TypeVar("_E", bound=CloudEvent)
_state_decoder = msgspec.json.Decoder(JourneyState)
_encode = msgspec.json.encode


class Outcome(msgspec.Struct, kw_only=True):
    applied: int = 0
    duplicates: int = 0
    applied_types: Counter[tuple[str, str]] = msgspec.field(default_factory=Counter)  # (type, system)
    journeys: list[Journey] = []  # as they now stand, for the live feed
    merged_away: list[JourneyMerged] = []  # journeys a link joined to another: gone
    sites: set[str] = set()
    # events that carry a `traceparent`, by (source, id): the journey each went to (switchboard/tracing.py)
    traced_journeys: dict[tuple[str, str], UUID] = {}
    # journey → the `traceparent` its live update continues; set by the apply worker
    traces: dict[UUID, str] = {}
    failures: set[int] = set()  # resolved by command answers: the caller announces them once committed
    # events that decoded but may not be applied, with their dedupe keys: the caller records them as failures
    refused: list[tuple[Rejected, str]] = []

    def add(self, other: Outcome) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.applied_types.update(other.applied_types)
        self.journeys.extend(other.journeys)
        self.merged_away.extend(other.merged_away)
        self.sites |= other.sites
        self.traced_journeys.update(other.traced_journeys)
        self.failures |= other.failures
        self.refused.extend(other.refused)


def failure_key(event: CloudEvent) -> str:
    """The dedupe key of the failure of an event that could not be applied: the same event failing again is
    the same failure."""
    return f"apply:{event.source} {event.id}"


class JourneyTooLargeError(Exception):
    """Raised in the batch's transaction, which it rolls back: the event that caused it becomes an
    `apply_error` when the batch is applied again one event at a time."""


class _Working(msgspec.Struct):
    state: JourneyState
    created_at: datetime


class _TimeOrderedIds:
    """UUIDv7 (RFC 9562): milliseconds since the epoch, a counter, then random bits.

    New journeys land at the right edge of every index on journey ids (journeys, journey_refs, events,
    commands) instead of on a random page of each, so inserting one costs the same however many are stored.
    The counter (the RFC's method 1, in `rand_a`) keeps ids made in one millisecond in the order they were
    made: journeys one batch creates share its clock, and a link keeps the one whose event came first.
    """

    def __init__(self) -> None:
        self.ms = 0
        self.counter = 0

    def __call__(self) -> UUID:
        ms = time.time_ns() // 1_000_000
        if ms > self.ms:
            self.ms, self.counter = ms, int.from_bytes(os.urandom(2), "big") & 0x7FF  # room to count up
        else:  # the same millisecond (or a clock set back): count on from the last id
            self.counter += 1
            if self.counter > 0xFFF:
                self.ms, self.counter = self.ms + 1, 0
        random_bits = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        return UUID(int=self.ms << 80 | 0x7 << 76 | self.counter << 64 | 0b10 << 62 | random_bits)


time_ordered_id = _TimeOrderedIds()


# The advisory locks (on every reference and subject the batch names) are a one-time filter of the insert: all
# taken, in the array's (sorted) order, before the first inbox row is written. The inbox's unique key then
# tells new events from ones already applied, including one another replica committed after this statement
# began (ON CONFLICT waits for an insert in progress and sees the committed row), so events need no lock of
# their own.
_CLAIM = """
INSERT INTO event_inbox (source, id)
SELECT k.source, k.id FROM unnest($1::text[], $2::text[]) AS k(source, id)
WHERE (SELECT count(*) FROM unnest($3::bigint[]) AS l WHERE pg_advisory_xact_lock(l) IS NOT NULL) >= 0
ON CONFLICT DO NOTHING
RETURNING source, id
"""

# References to journeys, and those journeys locked. Only a merge (which holds the absorbed journey's lock)
# re-points a reference, and it deletes the absorbed journey in the same transaction: a reference whose
# journey was gone once its lock was granted has moved, and is resolved again.
_RESOLVE = """
WITH mapped AS (SELECT ref, journey_id FROM journey_refs WHERE ref = ANY($1::text[])),
locked AS (SELECT id, state, created_at FROM journeys WHERE id IN (SELECT journey_id FROM mapped) ORDER BY id
    FOR UPDATE)
SELECT m.ref, m.journey_id, l.state, l.created_at FROM mapped m LEFT JOIN locked l ON l.id = m.journey_id
"""


async def _lock_journeys(conn: asyncpg.Connection,
                         refs: list[str]) -> tuple[dict[str, UUID], dict[UUID, _Working]]:
    """Resolve references to journeys and lock those rows; again while a resolved journey was merged away."""
    while True:
        rows = await conn.fetch(_RESOLVE, refs)
        if all(r["state"] is not None for r in rows):
            locked: dict[UUID, _Working] = {}
            for r in rows:
                if r["journey_id"] not in locked:
                    locked[r["journey_id"]] = _Working(_state_decoder.decode(r["state"]), r["created_at"])
            return {r["ref"]: r["journey_id"] for r in rows}, locked


# One Struct per table written, its fields named as the table's columns: a batch's rows travel as one JSON
# array per table (msgspec encodes them in one pass, Postgres reads them with jsonb_populate_recordset), which
# costs far less than binding every value of every row as an array element. Read as `jsonb`, each array is
# parsed once; as `json`, every jsonb column (a journey's state, an event's data) was parsed a second time
# (the write took 11% longer).
class _JourneyRow(msgspec.Struct):
    id: UUID
    site: str
    stage: str
    state: JourneyState
    arrived_at: str | None
    waiting_at: str | None
    called_at: str | None
    in_service_at: str | None
    finished_at: str | None
    created_at: datetime


class _RefRow(msgspec.Struct):
    ref: str
    journey_id: UUID


class _EventRow(msgspec.Struct):
    source: str
    id: str
    type: str
    subject: str
    site: str | None
    time: datetime
    data: msgspec.Struct
    journey_id: UUID | None
    dropped_fields: int
    traceparent: str | None
    scope: str | None


class _CapacityRow(msgspec.Struct):
    site: str
    counters_open: int
    counters_busy: int
    staff_on_duty: int
    queue_length: int
    event_key: str
    updated_at: datetime


class _HeartbeatRow(msgspec.Struct):
    connector: str
    system: str
    upstream: str
    version: str
    event_key: str
    seen_at: datetime


def _journey_row(jid: UUID, work: _Working) -> _JourneyRow:
    state = work.state
    stage = state.value("stage") or "open"
    reached = state.reached
    return _JourneyRow(jid, state.value("site"), stage, state, reached.get("arrived"), reached.get("waiting"),
                       reached.get("called"), reached.get("in_service"),
                       reached.get(stage) if stage in FINAL_STAGES else None, work.created_at)


def _rows(rows: list[Any]) -> str:
    return _encode(rows).decode()


async def apply_events(conn: asyncpg.Connection, batch: list[Accepted], *, rules: RuleSet) -> Outcome:
    """Apply validated events, writing the commands `rules` call for; events already applied are counted as
    duplicates, and command answers that may not be applied are `refused`."""
    unique: dict[tuple[str, str], Accepted] = {}
    for accepted in batch:
        unique.setdefault((accepted.event.source, accepted.event.id), accepted)
    refused: list[tuple[Rejected, str]] = []
    if results := [a.event for a in unique.values() if isinstance(a.event, CommandResult)]:
        for key, (kind, reason) in (await unanswerable(conn, results)).items():
            gone = unique.pop(key)
            refused.append((rejected_event(gone.event, kind, reason, gone.scope), failure_key(gone.event)))
    lock_texts: set[str] = set()
    for event in (a.event for a in unique.values()):
        lock_texts.update(refs_of(event) if event.kind == "journey" else [event.subject])
    sources, ids = zip(*sorted(unique), strict=True) if unique else ((), ())
    claimed = {
        (r["source"], r["id"]) for r in await conn.fetch(
            _CLAIM, list(sources), list(ids), sorted(lock_key(t) for t in lock_texts))
    }
    fresh = [accepted for key, accepted in unique.items() if key in claimed]
    outcome = Outcome(applied=len(fresh), duplicates=len(batch) - len(fresh) - len(refused), refused=refused,
                      applied_types=Counter((a.event.type, a.event.system) for a in fresh))
    if not fresh:
        return outcome

    events = [a.event for a in fresh]
    journey_events = [a for a in fresh if a.event.kind == "journey"]
    traced = {(e.source, e.id): e.traceparent for e in events if e.kind == "journey" and e.traceparent}
    refs = sorted({r for a in journey_events for r in refs_of(a.event)})
    mapping, journeys = await _lock_journeys(conn, refs) if refs else ({}, {})
    before = {jid: work.state for jid, work in journeys.items()}
    for work in journeys.values():
        work.state = copy(work.state)  # `fold` works in place; `before` keeps what was stored
    existing = set(journeys)
    absorbed_by: dict[UUID, UUID] = {}

    def find(jid: UUID) -> UUID:
        root = jid
        while root in absorbed_by:
            root = absorbed_by[root]
        while jid != root:  # path compression: a chain of links is walked once per batch, not per lookup
            absorbed_by[jid], jid = root, absorbed_by[jid]
        return root

    now = datetime.now(UTC)
    new_refs: dict[str, UUID] = {}
    event_journey: dict[tuple[str, str], UUID] = {}
    touched: set[UUID] = set()
    for accepted in journey_events:
        event = accepted.event
        event_refs = refs_of(event)
        candidates = sorted({find(mapping[r]) for r in event_refs if r in mapping},
                            key=lambda j: (journeys[j].created_at, j))
        if candidates:
            state = journeys[candidates[0]].state
            for other in candidates[1:]:  # a link joins journeys: the oldest survives
                state = merge(state, journeys[other].state)
            jid = candidates[0]
            absorbed_by.update(dict.fromkeys(candidates[1:], jid))
            journeys[jid].state = fold(state, event, accepted.scope)
        else:
            jid = time_ordered_id()
            journeys[jid] = _Working(fold(JourneyState(), event, accepted.scope), now)
        touched.add(jid)
        for ref in event_refs:
            if ref not in mapping:
                new_refs[ref] = jid
            mapping[ref] = jid
        event_journey[(event.source, event.id)] = jid
    live = sorted({find(j) for j in touched})
    merged_away = [(old, find(old)) for old in absorbed_by if old in existing]
    if merged_away:
        await _repoint(conn, merged_away)
    journey_of = {key: find(jid) for key, jid in event_journey.items()}
    commands = planned_commands(rules, events=fresh, before=before, survivor=find,
                                journey_of=journey_of, after={j: journeys[j].state for j in live})
    journey_rows = [_journey_row(j, journeys[j]) for j in live]
    latencies: dict[str, list[int]] = {}
    for e in events:
        if not isinstance(e, ConnectorHeartbeat):
            latencies.setdefault(e.system, traffic.counter())[traffic.bucket(now - e.time)] += 1
    for row in journey_rows:
        if len(row.state.sites) > MAX_SITE_AUTHORITIES:
            raise JourneyTooLargeError(f"journey {row.id} would be placed by {len(row.state.sites)} systems"
                                       f" and sites, more than {MAX_SITE_AUTHORITIES}")
    written = await conn.fetch(
        _WRITE,
        _rows(journey_rows),
        _rows([_RefRow(ref, find(j)) for ref, j in new_refs.items()]),
        _rows([_EventRow(e.source, e.id, e.type, e.subject, getattr(e.data, "site", None), e.time, e.data,
                         journey_of.get((e.source, e.id)), a.dropped_fields, e.traceparent or None, a.scope)
               for e, a in zip(events, fresh, strict=True)]),
        _rows(commands),
        _rows([_CapacityRow(e.data.site, e.data.counters_open, e.data.counters_busy, e.data.staff_on_duty,
                            e.data.queue_length, e.key_by(now), min(e.time, now))
               for e in _latest_per_subject([e for e in events if isinstance(e, CapacityChanged)],
                                            now)]),
        _rows(_heartbeat_rows(fresh, now)),
        live,
        _rows(traffic.rows(latencies)),
    )
    for row, w in zip(journey_rows, written, strict=True):
        if len(w["refs"]) > MAX_JOURNEY_REFS:
            raise JourneyTooLargeError(f"journey {row.id} would hold {len(w['refs'])} references, more than "
                                       f"{MAX_JOURNEY_REFS}")
    results = [e for e in events if isinstance(e, CommandResult)]
    if results:
        outcome.failures = set(await record_answers(conn, results))

    outcome.journeys = [journey_view(row.state, id=row.id, site=row.site, stage=row.stage,
                                     refs=list(w["refs"]), created_at=row.created_at,
                                     updated_at=w["updated_at"])
                        for row, w in zip(journey_rows, written, strict=True)]
    outcome.merged_away = [JourneyMerged(id=old, site=before[old].value("site"), merged_into=new)
                           for old, new in merged_away]
    outcome.traced_journeys = {key: jid for key, jid in journey_of.items() if traced.get(key)}
    outcome.sites = {site for e in events if (site := getattr(e.data, "site", None)) is not None}
    return outcome


async def prepare(conn: asyncpg.Connection) -> None:
    """Prepare and plan the batch's statements on the worker's connection before its first batch: left to
    that batch, they made the first events after a start wait tens of milliseconds (the write's above all)."""
    async with conn.transaction():
        await conn.fetch(_CLAIM, [], [], [])
        await conn.fetch(_RESOLVE, [])
        await conn.fetch(_WRITE, "[]", "[]", "[]", "[]", "[]", "[]", [], "[]")


async def _repoint(conn: asyncpg.Connection, merged_away: list[tuple[UUID, UUID]]) -> None:
    """Journeys absorbed by a link: their references, events, commands and aliases go to the survivor, their
    rows away (a journey's commands go out in order: an absorbed one's held command holds the survivor's
    later ones back too)."""
    olds, news = map(list, zip(*merged_away, strict=True))
    for statement in (
        "UPDATE journey_refs r SET journey_id = m.new FROM unnest($1::uuid[], $2::uuid[]) AS m(old, new)"
        " WHERE r.journey_id = m.old",
        "UPDATE events e SET journey_id = m.new FROM unnest($1::uuid[], $2::uuid[]) AS m(old, new)"
        " WHERE e.journey_id = m.old",
        "UPDATE journey_aliases a SET new_id = m.new FROM unnest($1::uuid[], $2::uuid[]) AS m(old, new)"
        " WHERE a.new_id = m.old",
        "INSERT INTO journey_aliases (old_id, new_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])",
    ):
        await conn.execute(statement, olds, news)
    await lifecycle.follow_merges(conn, olds, news)
    await conn.execute("DELETE FROM journeys WHERE id = ANY($1::uuid[])", olds)


# Everything a batch writes, in one statement (the sub-statements see the same snapshot, so a command's
# references are the stored ones plus those this batch adds, grouped by journey once: `added` is joined,
# never scanned per row, so the statement stays linear in the batch). It answers with every written journey's
# references and `updated_at`, in the order given: the live feed publishes them without reading them back.
# Capacity and heartbeats keep only the newest event per site, or per system and connector, whatever order
# they arrive in, each dated when it arrived at the latest (`key_by`). Each system's events are added to its
# traffic of the minute (backend/integrations/traffic.py).
_WRITE = """
WITH new_refs AS (
    SELECT ref, journey_id FROM jsonb_populate_recordset(NULL::journey_refs, $2::jsonb)
), added AS (
    SELECT journey_id, array_agg(ref) AS refs FROM new_refs GROUP BY journey_id
), journeys_written AS (
    INSERT INTO journeys (id, site, stage, state, arrived_at, waiting_at, called_at, in_service_at,
        finished_at,
                          created_at, updated_at)
    SELECT id, site, stage, state, arrived_at, waiting_at, called_at, in_service_at, finished_at, created_at,
        now()
    FROM jsonb_populate_recordset(NULL::journeys, $1::jsonb)
    ON CONFLICT (id) DO UPDATE SET site = EXCLUDED.site, stage = EXCLUDED.stage, state = EXCLUDED.state,
        arrived_at = EXCLUDED.arrived_at, waiting_at = EXCLUDED.waiting_at, called_at = EXCLUDED.called_at,
        in_service_at = EXCLUDED.in_service_at, finished_at = EXCLUDED.finished_at, updated_at = now()
), refs_written AS (
    INSERT INTO journey_refs (ref, journey_id) SELECT ref, journey_id FROM new_refs
), events_written AS (
    INSERT INTO events (source, id, type, subject, site, time, data, journey_id, dropped_fields, traceparent,
        scope)
    SELECT source, id, type, subject, site, time, data, journey_id, dropped_fields, traceparent, scope
    FROM jsonb_populate_recordset(NULL::events, $3::jsonb)
), commands_written AS (
    INSERT INTO commands (id, rule, system, command, journey_id, site, data, refs)
    SELECT c.id, c.rule, c.system, c.command, c.journey_id, c.site, c.data,
           array(SELECT r.ref FROM journey_refs r WHERE r.journey_id = c.journey_id
                 UNION SELECT unnest(a.refs) ORDER BY 1)
    FROM jsonb_populate_recordset(NULL::commands, $4::jsonb) c
    LEFT JOIN added a ON a.journey_id = c.journey_id
    ON CONFLICT (id) DO NOTHING
), capacity_written AS (
    INSERT INTO capacity (site, counters_open, counters_busy, staff_on_duty, queue_length, event_key,
        updated_at)
    SELECT site, counters_open, counters_busy, staff_on_duty, queue_length, event_key, updated_at
    FROM jsonb_populate_recordset(NULL::capacity, $5::jsonb)
    ON CONFLICT (site) DO UPDATE SET counters_open = EXCLUDED.counters_open,
        counters_busy = EXCLUDED.counters_busy, staff_on_duty = EXCLUDED.staff_on_duty,
        queue_length = EXCLUDED.queue_length, event_key = EXCLUDED.event_key, updated_at = EXCLUDED.updated_at
    WHERE capacity.event_key < EXCLUDED.event_key
), heartbeats_written AS (
    INSERT INTO heartbeats (connector, system, upstream, version, event_key, seen_at)
    -- seen when it arrived at the latest: a heartbeat dated ahead keeps no connector alive for longer
    SELECT connector, system, upstream, version, event_key, least(seen_at, now()) FROM
        jsonb_populate_recordset(NULL::heartbeats, $6::jsonb)
    ON CONFLICT (system, connector) DO UPDATE SET upstream = EXCLUDED.upstream,
        version = EXCLUDED.version, event_key = EXCLUDED.event_key, seen_at = EXCLUDED.seen_at
    WHERE heartbeats.event_key < EXCLUDED.event_key
), traffic_written AS (
    INSERT INTO traffic_minutes (system, minute, writer, latency_ms)
    SELECT system, date_trunc('minute', now()), pg_backend_pid(), latency_ms
    FROM jsonb_populate_recordset(NULL::traffic_minutes, $8::jsonb)
    ON CONFLICT (system, minute, writer) DO UPDATE SET latency_ms = ARRAY(
        SELECT a + b FROM unnest(traffic_minutes.latency_ms, EXCLUDED.latency_ms)
        WITH ORDINALITY AS n(a, b, i) ORDER BY i)
)
SELECT j.id, array(SELECT r.ref FROM journey_refs r WHERE r.journey_id = j.id
                   UNION SELECT unnest(a.refs) ORDER BY 1) AS refs,
       now() AS updated_at
FROM unnest($7::uuid[]) WITH ORDINALITY AS j(id, n) LEFT JOIN added a ON a.journey_id = j.id ORDER BY j.n
"""


def _heartbeat_rows(fresh: list[Accepted], now: datetime) -> list[_HeartbeatRow]:
    """The latest heartbeat of each connector, keyed by the system it is authenticated as; its
    `connector:<name>` is only a label, to which a connector limited to sites adds the site it spoke for
    (`<name>@<site>`), so that it never reports for another connector."""
    latest: dict[tuple[str, str], tuple[str, ConnectorHeartbeat]] = {}
    for accepted in fresh:
        if isinstance(event := accepted.event, ConnectorHeartbeat):
            name = event.subject.removeprefix("connector:")
            label = name if accepted.scope is None else f"{name}@{accepted.scope}"
            at = (event.system, label)
            if at not in latest or event.key_by(now) > latest[at][1].key_by(now):
                latest[at] = label, event
    return [_HeartbeatRow(label, e.system, e.data.upstream, e.data.version, e.key_by(now), e.time)
            for label, e in latest.values()]


def _latest_per_subject(events: list[_E], now: datetime) -> list[_E]:
    latest: dict[str, _E] = {}
    for event in events:
        at = event.subject
        if at not in latest or event.key_by(now) > latest[at].key_by(now):
            latest[at] = event
    return list(latest.values())
