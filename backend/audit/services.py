"""The audit log: append-only (a trigger refuses UPDATE, DELETE and TRUNCATE for every role)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from backend.audit.schemas import AuditEntry
from backend.auth import Principal
from backend.privacy import audit_actor, scrubbed_reason


async def record(conn: asyncpg.Connection, principal: Principal, *, action: str, target: str,
                 reason: str | None, result: Any) -> None:
    """One action by one person, written in the transaction of the action itself.

    The reason is free text typed by staff: it is scrubbed like every stored reason, and an actor whose `sub`
    looks personal (an e-mail, a number, `First_Last`) is stored as its pseudonym (`backend.privacy`)."""
    await conn.execute(
        "INSERT INTO audit_log (actor, roles, action, target, reason, result) VALUES ($1, $2, $3, $4, $5,"
        " $6::jsonb)",
        audit_actor(principal), sorted(principal.roles), action, target, scrubbed_reason(reason),
        msgspec.json.encode(result).decode())


async def list_entries(conn: asyncpg.Connection, *, actor: str | None, since: datetime | None, limit: int,
                       cursor: int | None) -> list[AuditEntry]:
    rows = await conn.fetch(
        "SELECT * FROM audit_log WHERE ($1::text IS NULL OR actor = $1) AND ($2::timestamptz IS NULL OR at >="
        " $2) AND ($3::bigint IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        actor, since, cursor, limit)
    return [AuditEntry(id=r["id"], at=r["at"], actor=r["actor"], roles=list(r["roles"]), action=r["action"],
                       target=r["target"], reason=r["reason"],
                       result=msgspec.json.decode(r["result"])) for r in rows]
