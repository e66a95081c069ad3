"""The outbox side of a batch apply: commands written, answers recorded, in the batch's transaction.

Called once per batch by `apply_events` with the batch's new events only (duplicates never reach
here), so a command is written exactly when the state change that causes it commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from uuid import UUID

import asyncpg
import msgspec

from backend.failures.services import failure_changed
from backend.journeys.merge import JourneyState, merge
from backend.routing.engine import JourneyChange, PlannedCommand, active, plan
from switchboard.events import CloudEvent, CommandResult

_encode = msgspec.json.encode


async def write_commands_and_answers(
    conn: asyncpg.Connection, *, events: list[CloudEvent], journey_of: dict[tuple[str, str], UUID],
    before: dict[UUID, JourneyState], after: dict[UUID, JourneyState], survivor: Callable[[UUID], UUID],
) -> None:
    """`before`: the journeys' states as loaded (some may since have merged into a `survivor`)."""
    if after:
        await _write_commands(conn, plan(active(), _changes(events, journey_of, before, after, survivor)))
    results = [e for e in events if isinstance(e, CommandResult)]
    if results:
        await record_answers(conn, results)


def _changes(events: list[CloudEvent], journey_of: dict[tuple[str, str], UUID], before: dict[UUID, JourneyState],
             after: dict[UUID, JourneyState], survivor: Callable[[UUID], UUID]) -> list[JourneyChange]:
    merged_before: dict[UUID, JourneyState] = {}
    for jid, state in before.items():
        into = survivor(jid)
        merged_before[into] = merge(merged_before[into], state) if into in merged_before else state
    by_journey: dict[UUID, list[CloudEvent]] = defaultdict(list)
    for event in events:
        if (event.source, event.id) in journey_of:
            by_journey[journey_of[(event.source, event.id)]].append(event)
    return [JourneyChange(journey_id=jid, before=merged_before.get(jid, JourneyState()), after=state,
                          events=by_journey[jid]) for jid, state in after.items()]


async def _write_commands(conn: asyncpg.Connection, planned: list[PlannedCommand]) -> None:
    if not planned:
        return
    await conn.execute(
        """
        INSERT INTO commands (id, rule, system, command, journey_id, site, data, refs)
        SELECT u.*, array(SELECT r.ref FROM journey_refs r WHERE r.journey_id = u.journey_id ORDER BY r.ref)
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::jsonb[])
             AS u(id, rule, system, command, journey_id, site, data)
        ON CONFLICT (id) DO NOTHING
        """,
        [p.id for p in planned], [p.rule for p in planned], [p.system for p in planned],
        [p.command for p in planned], [p.journey_id for p in planned], [p.site for p in planned],
        [_encode(p.data).decode() for p in planned],
    )


def _command_id(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None  # not one of ours: the event is kept, there is nothing to settle


async def record_answers(conn: asyncpg.Connection, results: list[CommandResult]) -> None:
    """`ok` settles a command at once (and resolves its failure); `failed`/`unavailable` are left for the relay,
    which owns the delivery policy. Only the system a command went to may answer it.

    An answer can overtake the commit of its own publication (the relay publishes while holding the row).
    The condition therefore accepts a row that still looks unsent: the update then waits for the relay's
    commit and is re-checked against the committed `sent` row. A `failed`/`unavailable` answer for a row
    that is not `sent` answers an earlier attempt: it changes nothing.
    """
    answers: dict[UUID, CommandResult] = {}
    for result in sorted(results, key=lambda e: e.key):
        command_id = _command_id(result.data.command_id)
        if command_id is not None and (command_id not in answers or answers[command_id].data.status != "ok"):
            answers[command_id] = result
    if not answers:
        return
    settled = await conn.fetch(
        """
        UPDATE commands c SET
            status = CASE WHEN a.status = 'ok' THEN 'ok' ELSE c.status END,
            answer = CASE WHEN a.status = 'ok' THEN NULL WHEN c.status = 'sent' THEN a.status ELSE c.answer END,
            last_error = CASE WHEN a.status <> 'ok' AND c.status = 'sent' THEN coalesce(a.error, a.status)
                              ELSE c.last_error END,
            next_at = CASE WHEN a.status <> 'ok' AND c.status = 'sent' THEN now() ELSE c.next_at END,
            updated_at = now()
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS a(id, system, status, error)
        WHERE c.id = a.id AND c.system = a.system AND c.status <> 'ok' AND (a.status = 'ok' OR c.status <> 'failed')
        RETURNING c.id, c.status
        """,
        list(answers), [r.system for r in answers.values()], [r.data.status for r in answers.values()],
        [r.data.error for r in answers.values()],
    )
    ok = [str(r["id"]) for r in settled if r["status"] == "ok"]
    if ok:
        resolved = await conn.fetch(
            "UPDATE failures SET status = 'resolved', last_at = now() WHERE command_id = ANY($1::text[])"
            " AND status IN ('open', 'retrying') RETURNING id", ok)
        await failure_changed(conn, [r["id"] for r in resolved], "resolved")
