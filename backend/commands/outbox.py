"""The outbox side of a batch apply: the commands a batch calls for, and the answers it records.

Used once per batch by `apply_events` with the batch's new events only (duplicates never reach
here), in the batch's transaction: a command is written (with the batch's other rows, in its one
write statement) exactly when the state change that causes it commits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from uuid import UUID

import asyncpg

from backend.commands import lifecycle
from backend.ingest.validate import Accepted, FailureKind
from backend.journeys.merge import JourneyState, merge
from backend.routing.engine import JourneyChange, PlannedCommand, plan
from backend.routing.rules import RuleSet
from switchboard.events import CloudEvent, CommandResult
from switchboard.privacy import scrub


def planned_commands(
    rules: RuleSet, *, events: list[Accepted], journey_of: dict[tuple[str, str], UUID],
    before: dict[UUID, JourneyState], after: dict[UUID, JourneyState], survivor: Callable[[UUID], UUID],
) -> list[PlannedCommand]:
    """The commands `rules` call for. `before`: the journeys' states as loaded (some may since have
    merged into a `survivor`)."""
    return plan(rules, _changes(events, journey_of, before, after, survivor)) if after else []


def _changes(events: list[Accepted], journey_of: dict[tuple[str, str], UUID],
             before: dict[UUID, JourneyState],
             after: dict[UUID, JourneyState], survivor: Callable[[UUID], UUID]) -> list[JourneyChange]:
    merged_before: dict[UUID, JourneyState] = {}
    for jid, state in before.items():
        into = survivor(jid)
        merged_before[into] = merge(merged_before[into], state) if into in merged_before else state
    by_journey: dict[UUID, list[CloudEvent]] = defaultdict(list)
    for accepted in events:
        event = accepted.event
        journey = journey_of.get((event.source, event.id))
        # an event sent for another site than the journey's counts for nothing there, so no rule fires on it
        if journey is not None and (accepted.scope is None or accepted.scope == after[journey].value("site")):
            by_journey[journey].append(event)
    return [JourneyChange(journey_id=jid, before=merged_before.get(jid, JourneyState()), after=state,
                          events=by_journey[jid]) for jid, state in after.items()]


def _command_id(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None  # not one of ours


def _attempt(result: CommandResult) -> int | None:
    """The attempt an answer's id names (`result-<command id>-<attempt>`, docs/contract-notes.md)."""
    named = result.id.removeprefix(f"result-{result.data.command_id}-")
    return int(named) if named != result.id and named.isdigit() and len(named) < 9 else None


def _rank(result: CommandResult) -> tuple[bool, int]:
    return result.data.status == "ok", _attempt(result) or 0


async def unanswerable(conn: asyncpg.Connection,
                       results: list[CommandResult]) -> dict[tuple[str, str], tuple[FailureKind, str]]:
    """The answers that may not be applied, by (source, id), with their failure kind and reason: one naming
    no command Switchboard sent (or one retention has since purged), one from a system other than the
    command's (only its system may answer it), and one naming another site than the command's (a connector
    limited to sites names the site it answers from)."""
    named = {(r.source, r.id): (r.system, r.data.site, _command_id(r.data.command_id)) for r in results}
    rows = await conn.fetch("SELECT id, system, site FROM commands WHERE id = ANY($1::uuid[])",
                            list({command_id for *_, command_id in named.values() if command_id is not None}))
    sent = {row["id"]: (row["system"], row["site"]) for row in rows}
    refused: dict[tuple[str, str], tuple[FailureKind, str]] = {}
    for key, (system, site, command_id) in named.items():
        if command_id not in sent:
            refused[key] = "apply_error", "answers no command: none with its command_id was sent or is kept"
        elif sent[command_id][0] != system:
            refused[key] = "unauthorized_source", (f"answers a command sent to {sent[command_id][0]}:"
                                                   " only that system may answer it")
        elif site is not None and site != sent[command_id][1]:
            refused[key] = "unauthorized_source", (f"answers from site {site} a command of site"
                                                   f" {sent[command_id][1]}")
    return refused


async def record_answers(conn: asyncpg.Connection, results: list[CommandResult]) -> list[int]:
    """`ok` settles a command at once (and resolves its failure); `failed`/`unavailable` are left for the
    relay, which owns the delivery policy (`lifecycle.settle` says which answers count). The failures
    resolved, for the caller to announce once committed."""
    answers: dict[UUID, CommandResult] = {}
    # of a command's answers in the batch: an `ok`, else the latest attempt's
    for result in sorted(results, key=lambda e: e.key):
        command_id = _command_id(result.data.command_id)
        kept = answers.get(command_id) if command_id is not None else None
        if command_id is not None and (kept is None or _rank(result) >= _rank(kept)):
            answers[command_id] = result
    ok = await lifecycle.settle(conn, [
        lifecycle.Answer(command_id, r.system, r.data.status,
                         scrub(r.data.error) if r.data.error else None,  # an upstream may quote a customer
                         _attempt(r))
        for command_id, r in answers.items()])
    if not ok:
        return []
    resolved = await conn.fetch(
        "UPDATE failures SET status = 'resolved', last_at = now() WHERE command_id = ANY($1::text[])"
        " AND status IN ('open', 'retrying') RETURNING id", [str(i) for i in ok])
    return [r["id"] for r in resolved]
