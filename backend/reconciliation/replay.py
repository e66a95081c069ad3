"""Replaying a fallback's ledger once it ends (CONTRACT section 6).

A fallback in `replaying` gets a reconciliation run of its system and site (`trigger='fallback_end'`)
for each day it spanned; then every reference staff made or changed by hand is read from the system:
- it already holds our state: `in_system`;
- it does not have the record, or has not changed it since the fallback began: our state is pushed
  (`record.push` through the outbox, paced by the relay), `pushed` with the command id;
- it changed the record meanwhile: a drift item with `conflict` and the fallback, for a person to
  review, never overwritten.
Before any of that every manual step's event must have settled: a step whose event became a failure is
marked `refused` and skipped; one whose event is neither applied nor refused (its publish was not
confirmed, or the apply worker is behind) is published again, and the replay waits for the next round.
The fallback then ends with the counts in `replay`. Command ids derive from (fallback, ref) and only
`pending` ledger rows are looked at, so replaying twice pushes nothing twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
from nats.errors import Error as NatsError

from backend.audit import services as audit
from backend.db import lock_key
from backend.fallbacks.actions import ledger_event
from backend.fallbacks.services import announce_fallback
from backend.ingest import own_events
from backend.reconciliation import live
from backend.reconciliation.compare import differences
from backend.reconciliation.ownership import ours, theirs
from backend.reconciliation.repair import SWITCHBOARD, journey_state, push_command
from backend.reconciliation.snapshot_client import Unreachable, skipped_summary

if TYPE_CHECKING:
    from backend.reconciliation.scheduler import Reconciler

log = logging.getLogger(__name__)
_encode = msgspec.json.encode
_UNREACHABLE_PAUSE_S = 30.0
_REPLAY_NAMESPACE = uuid.UUID("6f1d5a52-37a4-4f0e-9a8e-2f4f7f9c1e01")


def replay_command_id(fallback_id: int, ref: str) -> uuid.UUID:
    return uuid.uuid5(_REPLAY_NAMESPACE, f"fallback:{fallback_id}:{ref}")



def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def replay_due(reconciler: Reconciler) -> None:
    async with reconciler.pool.acquire() as conn:
        replaying = await conn.fetch("SELECT id FROM fallbacks WHERE status = 'replaying' ORDER BY id")
    for fallback_id in [r["id"] for r in replaying]:
        await replay(reconciler, fallback_id)


async def replay(reconciler: Reconciler, fallback_id: int) -> dict[str, Any] | None:
    """Replay one fallback; None when it must wait (another replica has it, or the system cannot be
    reached)."""
    async with reconciler.pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(f"replay {fallback_id}")):
            return None
        try:
            return await _replay_locked(reconciler, conn, fallback_id)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key(f"replay {fallback_id}"))


async def _replay_locked(reconciler: Reconciler, conn: asyncpg.Connection,
                         fallback_id: int) -> dict[str, Any] | None:
    fallback = await conn.fetchrow("SELECT * FROM fallbacks WHERE id = $1 AND status = 'replaying'",
                                   fallback_id)
    if fallback is None:
        return None
    system, site, started_at = fallback["system"], fallback["site"], fallback["started_at"]
    earlier = msgspec.json.decode(fallback["replay"]) if fallback["replay"] else {}
    runs = earlier.get("runs", [])
    if not runs and await conn.fetchval(
            "SELECT true FROM reconciliation_runs WHERE system = $1 AND site = $2 AND trigger ="
            " 'fallback_end'"
            " AND status = 'unreachable' AND started_at > now() - make_interval(secs => $3) LIMIT 1",
            system, site, _UNREACHABLE_PAUSE_S):
        return None  # the system was away moments ago: ask again in a while, not every round
    if time.time() - earlier.get("unread_at", 0.0) < _UNREACHABLE_PAUSE_S:
        return None  # its records could not be read moments ago: likewise
    if await _unsettled_steps_sent_again(reconciler, conn, fallback_id):
        return None
    if not runs:  # a replay that waited for the system has had its runs
        days = _days(started_at.astimezone(UTC).date(), datetime.now(UTC).date())
        # each day's run kept as soon as it is done: a later day's failure, or a failed read of the records
        # after them, does not make them again
        done: dict[str, int] = earlier.get("run_days", {})
        for day in days:
            if day.isoformat() in done:
                continue
            run = await reconciler.run_now(system, site, day, trigger="fallback_end", requested_by=None)
            if run is None or run.status != "done":
                await _keep_progress(conn, fallback_id, earlier, [], run_days=done)
                return None  # running elsewhere, or the system is still away: the next round tries again
            done[day.isoformat()] = run.id
        runs = [done[day.isoformat()] for day in days]
        await _keep_progress(conn, fallback_id, earlier, runs)
    ledger = await conn.fetch("SELECT DISTINCT ref FROM fallback_ledger WHERE fallback_id = $1"
                              " AND replay_status = 'pending' ORDER BY ref", fallback_id)
    refs = [r["ref"] for r in ledger]
    skipped: dict[str, str] = {}
    try:
        records = await reconciler.client.refs(system, site, datetime.now(UTC).date(), refs,
                                                skipped) if refs else {}
    except Unreachable:
        await _keep_progress(conn, fallback_id, earlier, runs, unread_at=time.time())
        return None
    if skipped:  # the system has these records, unread: a push would overwrite them, so they stay pending
        log.warning("fallback %s: %d record(s) wait, the system's being one Switchboard cannot keep: %s",
                    fallback_id, len(skipped), skipped_summary(skipped))
        refs = [ref for ref in refs if ref not in skipped]
    pushed, conflicts, in_system, changed = [], [], [], []
    async with reconciler.resources.live.after_commit(conn) as announce:
        for ref in refs:
            journey = await journey_state(conn, ref)
            if journey is None:
                # its journey is gone since its steps applied (retention): nothing to hand the system
                continue
            record = records.get(ref)
            differing = differences(system, record, journey[2]) if record else ["record"]
            if not differing:
                outcome, command_id = "in_system", None
                in_system.append(ref)
            elif record is None or record.updated_at <= started_at:
                command_id = replay_command_id(fallback_id, ref)
                await push_command(conn, command_id=command_id, rule="fallback_replay", system=system,
                                   site=site, ref=ref, journey=journey)
                changed += [r["id"] for r in await conn.fetch(
                    "UPDATE drift_items SET status = 'repairing', action = 'push_ours', acted_by ="
                    " 'switchboard',"
                    " reason = $4, command_id = $3, fallback_id = $5, last_check = '{\"waiting_for\":"
                    " \"command\"}',"
                    " updated_at = now() WHERE system = $1 AND ref = $2 AND status = 'open' RETURNING id",
                    system, ref, command_id, f"replay of fallback {fallback_id}", fallback_id)]
                outcome = "pushed"
                pushed.append(ref)
            else:
                outcome, command_id = "conflict", None
                changed += await _flag_conflict(conn, fallback_id, runs[-1], system, site, ref, journey,
                                                record, differing)
                conflicts.append(ref)
            await conn.execute("UPDATE fallback_ledger SET replay_status = $3, command_id = $4"
                               " WHERE fallback_id = $1 AND ref = $2 AND replay_status = 'pending'",
                               fallback_id, ref, outcome, command_id)
        waiting = await conn.fetchval("SELECT count(*) FROM fallback_ledger WHERE fallback_id = $1"
                                      " AND replay_status = 'pending'", fallback_id)
        summary = {"pushed": earlier.get("pushed", 0) + len(pushed), "in_system": earlier.get("in_system", 0)
                   + len(in_system), "conflicts": sorted({*earlier.get("conflicts", []), *conflicts}),
                   "runs": runs}
        ended = not waiting
        await conn.execute(
            "UPDATE fallbacks SET replay = $2::jsonb, status = CASE WHEN $3 THEN 'ended' ELSE status END,"
            " ended_at = coalesce(ended_at, now()) WHERE id = $1", fallback_id, _encode(summary).decode(),
            ended)
        if ended or pushed or conflicts or in_system:
            await audit.record(conn, SWITCHBOARD, action="fallback.replay", target=f"fallback:{fallback_id}",
                               reason=None, result={**summary, "ended": ended, "pushed_now": pushed})
        await announce_fallback(conn, announce, fallback_id)
    if changed:
        await live.publish_drift(reconciler.resources.live, conn, changed)
    return summary


async def _keep_progress(conn: asyncpg.Connection, fallback_id: int, earlier: dict[str, Any], runs: list[int],
                         **extra: Any) -> None:
    """The replay so far, as its summary reads it, with its runs: what a later round starts from."""
    progress = {"pushed": earlier.get("pushed", 0), "in_system": earlier.get("in_system", 0),
                "conflicts": earlier.get("conflicts", []), "runs": runs, **extra}
    await conn.execute("UPDATE fallbacks SET replay = $2::jsonb WHERE id = $1 AND status = 'replaying'",
                       fallback_id, _encode(progress).decode())


async def _unsettled_steps_sent_again(reconciler: Reconciler, conn: asyncpg.Connection,
                                      fallback_id: int) -> bool:
    """Marks the steps whose event was refused; publishes again those whose event is neither applied nor
    refused (the message id and the apply side's inbox make that harmless) and says whether there were any.
    A step refused once, whose event a retry of its failure then applied, is replayed like any applied one."""
    await conn.execute(
        "UPDATE fallback_ledger l SET replay_status = 'pending' WHERE l.fallback_id = $1"
        " AND l.replay_status = 'refused'"
        " AND EXISTS (SELECT 1 FROM event_inbox e WHERE e.source = l.event_source AND e.id = l.event_id)",
        fallback_id)
    await conn.execute(
        "UPDATE fallback_ledger l SET replay_status = 'refused' WHERE l.fallback_id = $1 AND l.replay_status"
        " = 'pending'"
        " AND EXISTS (SELECT 1 FROM failures f WHERE f.event_source = l.event_source AND f.event_id ="
        " l.event_id)"
        " AND NOT EXISTS (SELECT 1 FROM event_inbox e WHERE e.source = l.event_source AND e.id = l.event_id)",
        fallback_id)
    unsettled = await conn.fetch(
        "SELECT * FROM fallback_ledger l WHERE l.fallback_id = $1 AND l.replay_status = 'pending'"
        " AND NOT EXISTS (SELECT 1 FROM event_inbox e WHERE e.source = l.event_source AND e.id = l.event_id)"
        " ORDER BY seq", fallback_id)
    if unsettled:
        key = own_events.signing_key(reconciler.resources.settings)
        for row in unsettled:
            try:
                await own_events.publish(reconciler.resources.js, key, ledger_event(row))
            except (NatsError, TimeoutError):
                log.warning("fallback %s: the event of step %s could not be sent again", fallback_id,
                            row["seq"])
                break
    return bool(unsettled)


async def _flag_conflict(conn: asyncpg.Connection, fallback_id: int, run_id: int, system: str, site: str,
                         ref: str, journey: Any, record: Any, differing: list[str]) -> list[int]:
    """The system changed a record staff also changed by hand: one conflict item per differing field."""
    ids = []
    for field in differing:
        row = await conn.fetchrow(
            """
            INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, journey_id, kind, field, ours,
                theirs,
                                     theirs_updated_at, record, fallback_id, conflict)
            VALUES ($1, $2, $3, $4, $5, $6, 'state_mismatch', $7, $8::jsonb, $9::jsonb, $10, $11::jsonb, $12,
                true)
            ON CONFLICT (dedupe_key) WHERE status IN ('open', 'repairing') DO UPDATE SET
                conflict = true, fallback_id = EXCLUDED.fallback_id, updated_at = now()
            RETURNING id
            """,
            f"{system}|{ref}|state_mismatch|{field}", run_id, system, site, ref, journey[0], field,
            _encode(ours(system, journey[2], field)).decode(), _encode(theirs(record, field)).decode(),
            record.updated_at, _encode(record).decode(), fallback_id)
        ids.append(row["id"])
    return ids
