"""Actions on a customer at the floor (CONTRACT section 10).

In normal operation an action is a command to the queue system through the outbox (`ticket.call`, …),
written with its step in one transaction; while a fallback for the queue is active at the customer's site
it is a manual step of that fallback instead (backend/fallbacks/actions.py), waited for briefly
(`floor_apply_wait_s`, well under a page's patience) and answered as it stands. The caller's `step_id`
names the action for good: a repeat, concurrent or late, reads the first one (its command, or its ledger
step, as it stands now) and does nothing again.
"""

from __future__ import annotations

import uuid
from operator import itemgetter
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from litestar.exceptions import ClientException

from backend.audit import services as audit
from backend.auth import Principal
from backend.commands import services as commands
from backend.errors import ConflictException
from backend.fallbacks import actions as manual
from backend.fallbacks.schemas import ManualAction
from backend.journeys.merge import JourneyState
from backend.privacy import acting_user
from backend.resources import Resources
from backend.sites.schemas import FloorAction, FloorActionAnswer
from backend.visibility import visible
from switchboard.commands import FLOOR_COMMANDS
from switchboard.privacy import looks_personal_identifier

QUEUE = "queue"
RULE = "floor"
DEFAULT_OUTCOME = "SERVED"
# the stages each action acts on
_FROM = {"call": ("arrived", "waiting"), "recall": ("called",), "no_show": ("arrived", "waiting", "called"),
         "transfer": ("arrived", "waiting"), "start": ("called",), "complete": ("in_service",)}
_state = msgspec.json.Decoder(JourneyState)


class Journey(msgspec.Struct, kw_only=True):
    id: UUID
    site: str
    stage: str
    state: JourneyState
    refs: list[str]

    @property
    def ticket_ref(self) -> str | None:
        """The queue's reference of the customer (its ticket), or a manual ticket's."""
        return next((r for r in self.refs if r.startswith(f"{QUEUE}:")), None) or next(
            (r for r in self.refs if r.startswith("manual:")), None)


async def _journey(conn: asyncpg.Connection, principal: Principal, journey_id: UUID) -> Journey:
    row = await conn.fetchrow(
        "SELECT j.id, j.site, j.stage, j.state, array(SELECT r.ref FROM journey_refs r WHERE r.journey_id ="
        " j.id ORDER BY r.ref) AS refs FROM journeys j WHERE j.id = coalesce((SELECT new_id FROM"
        " journey_aliases WHERE old_id = $1), $1)", journey_id)
    row = visible(principal, "journey", row, itemgetter("site"))
    return Journey(id=row["id"], site=row["site"], stage=row["stage"], state=_state.decode(row["state"]),
                   refs=list(row["refs"]))


def _checked(journey: Journey, wanted: FloorAction, counters: tuple[str, ...]) -> dict[str, Any]:
    """What the action sends besides the ticket: its fields, the customer's counter where none is given.
    `counters`: the site's configured counters (none configured: any counter)."""
    for name in ("counter", "queue_name", "outcome", "reason", "step_id"):
        value = getattr(wanted, name)
        if value is not None and looks_personal_identifier(value):
            # it would be stored with the command and sent on: codes only, never a number or a name
            raise ClientException(f"{name} looks like personal data: send a code")
    if journey.stage not in _FROM[wanted.action]:
        raise ConflictException(f"{wanted.action} is for a customer {' or '.join(_FROM[wanted.action])};"
                                f" this one is {journey.stage}")
    counter = wanted.counter or (journey.state.value("counter") if wanted.action in ("recall", "start")
                                 else None)
    match wanted.action:
        case "call" | "recall" | "start" if counter is None:
            raise ClientException(f"{wanted.action} needs a counter")
        case "transfer" if wanted.queue_name is None:
            raise ClientException("transfer needs a queue_name")
    if wanted.counter is not None and counters and wanted.counter not in counters:
        raise ClientException(f"counter {wanted.counter} is not one of the site's: {', '.join(counters)}")
    fields = {"counter": counter, "queue_name": wanted.queue_name, "reason": wanted.reason,
              "outcome": wanted.outcome or DEFAULT_OUTCOME if wanted.action == "complete" else None}
    return {k: v for k, v in fields.items() if v is not None}


async def perform(resources: Resources, principal: Principal, journey_id: UUID,
                  wanted: FloorAction) -> FloorActionAnswer:
    async with resources.pool.acquire() as conn:
        journey = await _journey(conn, principal, journey_id)
        if (first := await _first_answer(conn, journey, wanted)) is not None:
            return first
        fields = _checked(journey, wanted, resources.sites.get(journey.site).counters)
        fallback_id = await conn.fetchval("SELECT id FROM fallbacks WHERE site = $1 AND system = $2"
                                          " AND status = 'active'", journey.site, QUEUE)
        if fallback_id is None:
            return await _send(conn, resources, principal, journey, wanted, fields)
    return await _by_hand(resources, principal, fallback_id, journey, wanted, fields)


async def _send(conn: asyncpg.Connection, resources: Resources, principal: Principal, journey: Journey,
                wanted: FloorAction, fields: dict[str, Any]) -> FloorActionAnswer:
    ticket_ref = journey.ticket_ref
    if ticket_ref is None or not ticket_ref.startswith(f"{QUEUE}:"):
        raise ConflictException("the queue system has no ticket for this customer: issue one first")
    command_id = uuid.uuid4()
    async with conn.transaction():
        taken = await conn.fetchval(
            "INSERT INTO floor_steps (step_id, journey_id, site, action, actor, command_id)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (step_id) DO NOTHING RETURNING true",
            wanted.step_id, journey.id, journey.site, wanted.action, acting_user(principal, resources),
            command_id)
        if taken:
            data = {"rule": RULE, "ref": ticket_ref, "site": journey.site, "step_id": wanted.step_id,
                    **fields}
            await conn.execute(
                "INSERT INTO commands (id, rule, system, command, journey_id, site, data, refs)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)", command_id, RULE, QUEUE,
                FLOOR_COMMANDS[wanted.action], journey.id, journey.site, msgspec.json.encode(data).decode(),
                journey.refs)
            await audit.record(conn, principal, action="floor.action", target=f"journey:{journey.id}",
                               reason=None, result={"action": wanted.action, "step_id": wanted.step_id,
                                                    "via": "command", "command_id": str(command_id)})
    answer = await _first_answer(conn, journey, wanted)  # ours, or a concurrent repeat's that came first
    assert answer is not None
    return msgspec.structs.replace(answer, repeated=not taken)


async def _by_hand(resources: Resources, principal: Principal, fallback_id: int, journey: Journey,
                   wanted: FloorAction, fields: dict[str, Any]) -> FloorActionAnswer:
    ref = journey.ticket_ref or journey.refs[0]
    step = ManualAction(action=wanted.action, ref=ref, counter=fields.get("counter"),
                        queue_name=fields.get("queue_name"), outcome=fields.get("outcome"),
                        step_id=wanted.step_id)
    result = await manual.perform(resources, principal, fallback_id, step,
                                  wait_s=resources.settings.floor.floor_apply_wait_s)
    return FloorActionAnswer(step_id=wanted.step_id, journey_id=journey.id, action=wanted.action,
                             via="manual", status=result.status, repeated=result.repeated, step=result)


async def _first_answer(conn: asyncpg.Connection, journey: Journey,
                        wanted: FloorAction) -> FloorActionAnswer | None:
    """The answer to an earlier action with this step id, as it stands now; None if there was none."""
    # the step's journey as it is now: a link may have joined it to another since
    sent = await conn.fetchrow(
        "SELECT s.command_id, s.action, coalesce((SELECT a.new_id FROM journey_aliases a WHERE a.old_id ="
        " s.journey_id), s.journey_id) AS journey_id FROM floor_steps s WHERE s.step_id = $1", wanted.step_id)
    if sent is not None:
        _same_step(wanted, sent["action"], sent["journey_id"] == journey.id)
        state = await commands.get_command(conn, sent["command_id"])
        assert state is not None, "a floor step's command goes only with the step (retention purges both)"
        return FloorActionAnswer(step_id=wanted.step_id, journey_id=journey.id, action=wanted.action,
                                 via="command", status=state.status, repeated=True, command=state)
    step = await conn.fetchrow("SELECT fallback_id, seq, action, ref FROM fallback_ledger WHERE step_id = $1",
                               wanted.step_id)
    if step is None:
        return None
    _same_step(wanted, step["action"], step["ref"] in journey.refs)
    result = await manual.step_answer(conn, step["fallback_id"], step["seq"], repeated=True)
    return FloorActionAnswer(step_id=wanted.step_id, journey_id=journey.id, action=wanted.action,
                             via="manual", status=result.status, repeated=True, step=result)


def _same_step(wanted: FloorAction, action: str, same_journey: bool) -> None:
    if action != wanted.action or not same_journey:
        raise ConflictException(f"step id {wanted.step_id} names another step already: choose a new one")
