"""Apply a batch of validated events to Postgres in the caller's transaction.

Set-based: a handful of statements per batch, whatever its size. Concurrency across replicas:
advisory locks on every reference and event key the batch touches (taken in sorted order),
then row locks on the journeys those references resolve to. Two replicas applying events of the
same journey therefore serialise on it, and a reference is never given two journeys.
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

from backend.commands.outbox import write_commands_and_answers
from backend.journeys.merge import FINAL_STAGES, JourneyState, copy, fold, merge
from switchboard.events import CapacityChanged, CloudEvent, ConnectorHeartbeat, refs_of

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


async def _lock_journeys(conn: asyncpg.Connection, refs: list[str]) -> tuple[dict[str, UUID], dict[UUID, _Working]]:
    """Resolve references to journeys and lock those rows; re-resolve until the mapping is stable."""
    locked: dict[UUID, _Working] = {}
    while True:
        rows = await conn.fetch("SELECT ref, journey_id FROM journey_refs WHERE ref = ANY($1::text[])", refs)
        mapping = {r["ref"]: r["journey_id"] for r in rows}
        missing = set(mapping.values()) - locked.keys()
        if not missing:
            return mapping, locked
        for row in await conn.fetch(
            "SELECT id, state, created_at FROM journeys WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
            list(missing),
        ):
            locked[row["id"]] = _Working(_state_decoder.decode(row["state"]), row["created_at"])


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
    lock_texts = {f"event {s} {i}" for s, i in unique}
    for event, _ in unique.values():
        lock_texts.update(refs_of(event) if event.kind == "journey" else [event.subject])
    await conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k",
                       sorted(_lock_key(t) for t in lock_texts))

    sources, ids = zip(*unique) if unique else ((), ())
    seen = {
        (r["source"], r["id"]) for r in await conn.fetch(
            "SELECT e.source, e.id FROM event_inbox e JOIN unnest($1::text[], $2::text[]) AS k(source, id)"
            " ON e.source = k.source AND e.id = k.id", list(sources), list(ids))
    }
    fresh = [pair for key, pair in unique.items() if key not in seen]
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
    if live:
        rows = [_journey_row(j, journeys[j]) for j in live]
        await conn.execute(
            """
            INSERT INTO journeys (id, site, stage, state, arrived_at, waiting_at, called_at, in_service_at,
                                  finished_at, created_at, updated_at)
            SELECT u.*, now() FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[],
                 $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[]) AS u
            ON CONFLICT (id) DO UPDATE SET site = EXCLUDED.site, stage = EXCLUDED.stage, state = EXCLUDED.state,
                arrived_at = EXCLUDED.arrived_at, waiting_at = EXCLUDED.waiting_at, called_at = EXCLUDED.called_at,
                in_service_at = EXCLUDED.in_service_at, finished_at = EXCLUDED.finished_at, updated_at = now()
            """,
            *map(list, zip(*rows)),
        )
    merged_away = [(old, find(old)) for old in absorbed_by if old in existing]
    if merged_away:
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
    if new_refs:
        await conn.execute(
            "INSERT INTO journey_refs (ref, journey_id) SELECT * FROM unnest($1::text[], $2::uuid[])",
            list(new_refs), [find(j) for j in new_refs.values()],
        )

    await conn.execute("INSERT INTO event_inbox (source, id) SELECT * FROM unnest($1::text[], $2::text[])",
                       [e.source for e, _ in fresh], [e.id for e, _ in fresh])
    await conn.copy_records_to_table(
        "events",
        columns=["source", "id", "type", "subject", "site", "time", "data", "journey_id", "dropped_fields",
                 "traceparent"],
        records=[
            (e.source, e.id, e.type, e.subject, getattr(e.data, "site", None), e.time, _encode(e.data).decode(),
             find(event_journey[(e.source, e.id)]) if (e.source, e.id) in event_journey else None, dropped,
             e.traceparent or None)
            for e, dropped in fresh
        ],
    )
    await write_commands_and_answers(conn, events=[e for e, _ in fresh], before=before, survivor=find,
                                     journey_of={k: find(j) for k, j in event_journey.items()},
                                     after={j: journeys[j].state for j in live})
    await _apply_capacity(conn, [e for e, _ in fresh if isinstance(e, CapacityChanged)])
    await _apply_heartbeats(conn, [e for e, _ in fresh if isinstance(e, ConnectorHeartbeat)])

    outcome.journeys = live
    outcome.traced_journeys = {key: find(jid) for key, jid in event_journey.items() if traced.get(key)}
    outcome.sites = {getattr(e.data, "site", None) for e, _ in fresh} - {None}  # type: ignore[operator]
    return outcome


def _latest_per_subject(events: list[_E]) -> list[_E]:
    latest: dict[str, _E] = {}
    for event in events:
        if event.subject not in latest or event.key > latest[event.subject].key:
            latest[event.subject] = event
    return list(latest.values())


async def _apply_capacity(conn: asyncpg.Connection, events: list[CapacityChanged]) -> None:
    if not events:
        return
    rows = [(e.data.site, e.data.counters_open, e.data.counters_busy, e.data.staff_on_duty, e.data.queue_length,
             e.key, e.time) for e in _latest_per_subject(events)]
    await conn.execute(
        """
        INSERT INTO capacity (site, counters_open, counters_busy, staff_on_duty, queue_length, event_key, updated_at)
        SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::int[], $6::text[], $7::timestamptz[])
        ON CONFLICT (site) DO UPDATE SET counters_open = EXCLUDED.counters_open,
            counters_busy = EXCLUDED.counters_busy, staff_on_duty = EXCLUDED.staff_on_duty,
            queue_length = EXCLUDED.queue_length, event_key = EXCLUDED.event_key, updated_at = EXCLUDED.updated_at
        WHERE capacity.event_key < EXCLUDED.event_key
        """,
        *map(list, zip(*rows)),
    )


async def _apply_heartbeats(conn: asyncpg.Connection, events: list[ConnectorHeartbeat]) -> None:
    if not events:
        return
    rows = [(e.subject.removeprefix("connector:"), e.system, e.data.upstream, e.data.version, e.key, e.time)
            for e in _latest_per_subject(events)]
    await conn.execute(
        """
        INSERT INTO heartbeats (connector, system, upstream, version, event_key, seen_at)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
        ON CONFLICT (connector) DO UPDATE SET system = EXCLUDED.system, upstream = EXCLUDED.upstream,
            version = EXCLUDED.version, event_key = EXCLUDED.event_key, seen_at = EXCLUDED.seen_at
        WHERE heartbeats.event_key < EXCLUDED.event_key
        """,
        *map(list, zip(*rows)),
    )
