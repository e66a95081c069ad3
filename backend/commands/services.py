"""Reading commands with their attempts, and resending one."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from backend.audit import services as audit
from backend.auth import Principal
from backend.commands import lifecycle
from backend.commands.schemas import CommandAttempt, CommandState, ResendResult
from backend.errors import ConflictException
from backend.failures.services import failure_changed
from backend.live.bus import LiveBus
from backend.visibility import visible

_FIELDS = tuple(f for f in CommandState.__struct_fields__
                if f not in ("refs", "data", "attempt_history", "resendable"))
# the predicate of `lifecycle.resend`, read-only: what the console offers to resend
_RESENDABLE = """
    (c.resend_requested_at IS NULL OR c.resend_requested_at < c.sent_at)
    AND (c.status = 'failed' OR c.status IN ('pending', 'held') AND EXISTS (
        SELECT 1 FROM command_attempts t WHERE t.command_id = c.id AND t.attempt = c.attempts
          AND t.answer IN ('failed', 'unavailable'))) AS resendable"""
_HISTORY = """
    array(SELECT row(t.attempt, t.sent_at, t.answer, t.error, t.answered_at) FROM command_attempts t
          WHERE t.command_id = c.id ORDER BY t.attempt) AS history"""


def _command(row: asyncpg.Record) -> CommandState:
    history = [CommandAttempt(attempt=h[0], sent_at=h[1], answer=h[2], error=h[3], answered_at=h[4])
               for h in row["history"]]
    return CommandState(**{f: row[f] for f in _FIELDS}, refs=list(row["refs"]),
                        data=msgspec.json.decode(row["data"]), attempt_history=history,
                        resendable=row["resendable"])


async def list_commands(conn: asyncpg.Connection, *, sites: list[str] | None, system: str | None,
                        status: str | None,
                        journey: UUID | None, limit: int,
                        cursor: int | None) -> tuple[list[CommandState], int | None]:
    """Newest first; the second value is the cursor for the next page."""
    args: list[Any] = [sites, system, status, journey, cursor, limit + 1]
    rows = await conn.fetch(
        f"""
        SELECT c.*, {_RESENDABLE}, {_HISTORY} FROM commands c
        WHERE ($1::text[] IS NULL OR site = ANY($1)) AND ($2::text IS NULL OR system = $2)
          AND ($3::text IS NULL OR status = $3)
          AND ($4::uuid IS NULL OR journey_id = coalesce((SELECT new_id FROM journey_aliases WHERE old_id =
              $4), $4)
               OR journey_id IN (SELECT old_id FROM journey_aliases WHERE new_id = $4))
          AND ($5::bigint IS NULL OR seq < $5)
        ORDER BY seq DESC LIMIT $6
        """,
        *args,
    )
    items = [_command(r) for r in rows[:limit]]
    return items, (rows[limit - 1]["seq"] if len(rows) > limit else None)


async def get_command(conn: asyncpg.Connection, command_id: UUID) -> CommandState | None:
    row = await conn.fetchrow(f"SELECT c.*, {_RESENDABLE}, {_HISTORY} FROM commands c WHERE c.id = $1",
                              command_id)
    return None if row is None else _command(row)


async def resend(conn: asyncpg.Connection, bus: LiveBus, principal: Principal, actor: str, command_id: UUID,
                 reason: str | None) -> ResendResult:
    """Send a command again now, in one transaction with its audit entry; 409 when its state does not
    allow it (a resend already waiting included, so concurrent resends send it once)."""
    async with bus.after_commit(conn) as announce:
        site = await conn.fetchval("SELECT site FROM commands WHERE id = $1", command_id)
        visible(principal, "command", site, site=lambda own_site: own_site)
        if not await lifecycle.resend(conn, command_id):
            state = await conn.fetchval("SELECT status FROM commands WHERE id = $1", command_id)
            raise ConflictException(
                f"this command is {state}: only one that failed for good, or whose last answer was failed or"
                " unavailable, is sent again (and a resend already asked for goes out once)")
        retrying = await conn.fetch(
            "UPDATE failures SET status = 'retrying', last_retry_at = now(), acted_by = $2"
            " WHERE command_id = $1 AND status = 'open' RETURNING id", str(command_id), actor)
        failure_ids = sorted(r["id"] for r in retrying)
        await failure_changed(conn, announce, failure_ids)
        result = ResendResult(command_id=command_id, status="pending", failure_ids=failure_ids)
        await audit.record(conn, principal, action="command.resend", target=f"command:{command_id}",
                           reason=reason, result=msgspec.to_builtins(result))
    return result
