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

import hashlib
import os
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

import asyncpg
import msgspec

from backend.commands.outbox import planned_commands, record_answers
from backend.journeys.merge import FINAL_STAGES, JourneyState, copy, fold, merge
from switchboard.events import CapacityChanged, CloudEvent, CommandResult, ConnectorHeartbeat, refs_of

_E = TypeVar("_E", bound=CloudEvent)
_state_decoder = msgspec.json.Decoder(JourneyState)
_encode = msgspec.json.encode


class Outcome(msgspec.Struct, kw_only=True):
    applied: int = 0
    duplicates: int = 0
    applied_types: Counter[tuple[str, str]] = msgspec.field(default_factory=Counter)  # (type, system)
    journeys: list[UUID] = []
    sites: set[str] = set()
    # events that carry a `traceparent`, by (source, id): the journey each went to (switchboard/tracing.py)
    traced_journeys: dict[tuple[str, str], UUID] = {}
    # journey → the `traceparent` its live update continues; set by the apply worker
    traces: dict[UUID, str] = {}

    def add(self, other: Outcome) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.applied_types.update(other.applied_types)
        self.journeys.extend(other.journeys)
        self.sites |= other.sites
        self.traced_journeys.update(other.traced_journeys)


class _Working(msgspec.Struct):
    state: JourneyState
    created_at: datetime


def time_ordered_id() -> UUID:
    """A UUIDv7 (RFC 9562): milliseconds since the epoch, then random bits.

    New journeys land at the right edge of every index on journey ids (journeys, journey_refs, events,
    commands) instead of on a random page of each, so inserting one costs the same however many are stored.
    """
    rand = int.from_bytes(os.urandom(10), "big")
    return UUID(int=(time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62
                | rand & ((1 << 62) - 1))


def _lock_key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


# The advisory locks (on every reference and subject the batch names) are a one-time filter of the insert: all
# taken, in the array's (sorted) order, before the first inbox row is written. The inbox's unique key then tells
# new events from ones already applied, including one another replica committed after this statement began
# (ON CONFLICT waits for an insert in progress and sees the committed row), so events need no lock of their own.
_CLAIM = """
INSERT INTO event_inbox (source, id)
SELECT k.source, k.id FROM unnest($1::text[], $2::text[]) AS k(source, id)
WHERE (SELECT count(*) FROM unnest($3::bigint[]) AS l WHERE pg_advisory_xact_lock(l) IS NOT NULL) >= 0
ON CONFLICT DO NOTHING
RETURNING source, id
"""

# References to journeys, and those journeys locked. Only a merge (which holds the absorbed journey's lock)
# re-points a reference, and it deletes the absorbed journey in the same transaction: a reference whose journey
# was gone once its lock was granted has moved, and is resolved again.
_RESOLVE = """
WITH mapped AS (SELECT ref, journey_id FROM journey_refs WHERE ref = ANY($1::text[])),
locked AS (SELECT id, state, created_at FROM journeys WHERE id IN (SELECT journey_id FROM mapped) ORDER BY id FOR UPDATE)
SELECT m.ref, m.journey_id, l.state, l.created_at FROM mapped m LEFT JOIN locked l ON l.id = m.journey_id
"""


async def _lock_journeys(conn: asyncpg.Connection, refs: list[str]) -> tuple[dict[str, UUID], dict[UUID, _Working]]:
    """Resolve references to journeys and lock those rows; again while a resolved journey was merged away."""
    while True:
        rows = await conn.fetch(_RESOLVE, refs)
        if all(r["state"] is not None for r in rows):
            locked: dict[UUID, _Working] = {}
            for r in rows:
                if r["journey_id"] not in locked:
                    locked[r["journey_id"]] = _Working(_state_decoder.decode(r["state"]), r["created_at"])
            return {r["ref"]: r["journey_id"] for r in rows}, locked


def _at(state: JourneyState, stage: str) -> datetime | None:
    at = state.reached.get(stage)
    return datetime.fromisoformat(at) if at else None


def _journey_row(jid: UUID, work: _Working) -> tuple[object, ...]:
    state = work.state
    stage = state.value("stage") or "open"
    return (
        jid, state.value("site"), stage, _encode(state).decode(),
        _at(state, "arrived"), _at(state, "waiting"), _at(state, "called"), _at(state, "in_service"),
        _at(state, stage) if stage in FINAL_STAGES else None, work.created_at,
    )


async def apply_events(conn: asyncpg.Connection, batch: list[tuple[CloudEvent, int]]) -> Outcome:
    """Apply `(event, dropped_fields)` pairs; events already applied are counted as duplicates."""
    unique: dict[tuple[str, str], tuple[CloudEvent, int]] = {}
    for event, dropped in batch:
        unique.setdefault((event.source, event.id), (event, dropped))
    lock_texts: set[str] = set()
    for event, _ in unique.values():
        lock_texts.update(refs_of(event) if event.kind == "journey" else [event.subject])
    sources, ids = zip(*sorted(unique)) if unique else ((), ())
    claimed = {
        (r["source"], r["id"]) for r in await conn.fetch(
            _CLAIM, list(sources), list(ids), sorted(_lock_key(t) for t in lock_texts))
    }
    fresh = [pair for key, pair in unique.items() if key in claimed]
    outcome = Outcome(applied=len(fresh), duplicates=len(batch) - len(fresh),
                      applied_types=Counter((e.type, e.system) for e, _ in fresh))
    if not fresh:
        return outcome

    journey_events = [e for e, _ in fresh if e.kind == "journey"]
    traced = {(e.source, e.id): e.traceparent for e in journey_events if e.traceparent}
    refs = sorted({r for e in journey_events for r in refs_of(e)})
    mapping, journeys = await _lock_journeys(conn, refs) if refs else ({}, {})
    before = {jid: work.state for jid, work in journeys.items()}
    for work in journeys.values():
        work.state = copy(work.state)  # `fold` works in place; `before` keeps what was stored
    existing = set(journeys)
    absorbed_by: dict[UUID, UUID] = {}

    def find(jid: UUID) -> UUID:
        while jid in absorbed_by:
            jid = absorbed_by[jid]
        return jid

    now = datetime.now(UTC)
    new_refs: dict[str, UUID] = {}
    event_journey: dict[tuple[str, str], UUID] = {}
    touched: set[UUID] = set()
    for event in journey_events:
        event_refs = refs_of(event)
        candidates = sorted({find(mapping[r]) for r in event_refs if r in mapping},
                            key=lambda j: (journeys[j].created_at, j))
        if candidates:
            jid = candidates[0]
            for other in candidates[1:]:  # a link joins journeys: the oldest survives
                journeys[jid].state = merge(journeys[jid].state, journeys[other].state)
                absorbed_by[other] = jid
        else:
            jid = time_ordered_id()
            journeys[jid] = _Working(JourneyState(), now)
        journeys[jid].state = fold(journeys[jid].state, event)
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
    commands = planned_commands(events=[e for e, _ in fresh], before=before, survivor=find, journey_of=journey_of,
                                after={j: journeys[j].state for j in live})
    await conn.execute(
        _WRITE,
        *_columns([_journey_row(j, journeys[j]) for j in live], 10),
        list(new_refs), [find(j) for j in new_refs.values()],
        *_columns([(e.source, e.id, e.type, e.subject, getattr(e.data, "site", None), e.time, _encode(e.data).decode(),
                    journey_of.get((e.source, e.id)), dropped, e.traceparent or None) for e, dropped in fresh], 10),
        *_columns([(c.id, c.rule, c.system, c.command, c.journey_id, c.site, _encode(c.data).decode())
                   for c in commands], 7),
        *_columns([(e.data.site, e.data.counters_open, e.data.counters_busy, e.data.staff_on_duty,
                    e.data.queue_length, e.key, e.time)
                   for e in _latest_per_subject([e for e, _ in fresh if isinstance(e, CapacityChanged)])], 7),
        *_columns([(e.subject.removeprefix("connector:"), e.system, e.data.upstream, e.data.version, e.key, e.time)
                   for e in _latest_per_subject([e for e, _ in fresh if isinstance(e, ConnectorHeartbeat)])], 6),
    )
    results = [e for e, _ in fresh if isinstance(e, CommandResult)]
    if results:
        await record_answers(conn, results)

    outcome.journeys = live
    outcome.traced_journeys = {key: jid for key, jid in journey_of.items() if traced.get(key)}
    outcome.sites = {getattr(e.data, "site", None) for e, _ in fresh} - {None}  # type: ignore[operator]
    return outcome


def _columns(rows: list[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as the column arrays `unnest` takes back apart."""
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


async def _repoint(conn: asyncpg.Connection, merged_away: list[tuple[UUID, UUID]]) -> None:
    """Journeys absorbed by a link: their references, events and aliases go to the survivor, their rows away."""
    olds, news = map(list, zip(*merged_away))
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
    await conn.execute("DELETE FROM journeys WHERE id = ANY($1::uuid[])", olds)


# Everything a batch writes, in one statement (the sub-statements see the same snapshot, so a command's
# references are the stored ones plus those this batch adds). Capacity and heartbeats keep only the
# newest event per site or connector, whatever order they arrive in.
_WRITE = """
WITH journeys_written AS (
    INSERT INTO journeys (id, site, stage, state, arrived_at, waiting_at, called_at, in_service_at, finished_at,
                          created_at, updated_at)
    SELECT u.*, now() FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[],
         $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[]) AS u
    ON CONFLICT (id) DO UPDATE SET site = EXCLUDED.site, stage = EXCLUDED.stage, state = EXCLUDED.state,
        arrived_at = EXCLUDED.arrived_at, waiting_at = EXCLUDED.waiting_at, called_at = EXCLUDED.called_at,
        in_service_at = EXCLUDED.in_service_at, finished_at = EXCLUDED.finished_at, updated_at = now()
), refs_written AS (
    INSERT INTO journey_refs (ref, journey_id) SELECT * FROM unnest($11::text[], $12::uuid[])
), events_written AS (
    INSERT INTO events (source, id, type, subject, site, time, data, journey_id, dropped_fields, traceparent)
    SELECT * FROM unnest($13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::timestamptz[],
                         $19::jsonb[], $20::uuid[], $21::int[], $22::text[])
), commands_written AS (
    INSERT INTO commands (id, rule, system, command, journey_id, site, data, refs)
    SELECT c.*, array(SELECT r.ref FROM journey_refs r WHERE r.journey_id = c.journey_id
                      UNION SELECT n.ref FROM unnest($11::text[], $12::uuid[]) AS n(ref, journey_id)
                      WHERE n.journey_id = c.journey_id ORDER BY 1)
    FROM unnest($23::uuid[], $24::text[], $25::text[], $26::text[], $27::uuid[], $28::text[], $29::jsonb[])
         AS c(id, rule, system, command, journey_id, site, data)
    ON CONFLICT (id) DO NOTHING
), capacity_written AS (
    INSERT INTO capacity (site, counters_open, counters_busy, staff_on_duty, queue_length, event_key, updated_at)
    SELECT * FROM unnest($30::text[], $31::int[], $32::int[], $33::int[], $34::int[], $35::text[], $36::timestamptz[])
    ON CONFLICT (site) DO UPDATE SET counters_open = EXCLUDED.counters_open,
        counters_busy = EXCLUDED.counters_busy, staff_on_duty = EXCLUDED.staff_on_duty,
        queue_length = EXCLUDED.queue_length, event_key = EXCLUDED.event_key, updated_at = EXCLUDED.updated_at
    WHERE capacity.event_key < EXCLUDED.event_key
), heartbeats_written AS (
    INSERT INTO heartbeats (connector, system, upstream, version, event_key, seen_at)
    SELECT * FROM unnest($37::text[], $38::text[], $39::text[], $40::text[], $41::text[], $42::timestamptz[])
    ON CONFLICT (connector) DO UPDATE SET system = EXCLUDED.system, upstream = EXCLUDED.upstream,
        version = EXCLUDED.version, event_key = EXCLUDED.event_key, seen_at = EXCLUDED.seen_at
    WHERE heartbeats.event_key < EXCLUDED.event_key
)
SELECT
"""


def _latest_per_subject(events: list[_E]) -> list[_E]:
    latest: dict[str, _E] = {}
    for event in events:
        if event.subject not in latest or event.key > latest[event.subject].key:
            latest[event.subject] = event
    return list(latest.values())
