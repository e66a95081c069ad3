"""Rows seeded by the database owner, dated in the past."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg


def days_ago(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


async def add_event(pool: asyncpg.Pool, uid: str, name: str, age_days: float) -> tuple[str, str]:
    key = ("/queue", f"{name}-{uid}")
    await pool.execute(
        "INSERT INTO events (source, id, type, subject, site, time, data, applied_at)"
        " VALUES ($1, $2, 'customer.arrived', $3, $4, $5, '{}', $5)",
        *key, f"queue:{name}-{uid}", f"ret-{uid}", days_ago(age_days))
    await pool.execute("INSERT INTO event_inbox (source, id, applied_at) VALUES ($1, $2, $3)", *key,
                       days_ago(age_days))
    return key


async def add_audit(pool: asyncpg.Pool, uid: str, age_days: float) -> int:
    """An audit row dated in the past, as only the table's owner can seed one (the stamp trigger
    otherwise dates every insert now)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_stamp")
        row_id = await conn.fetchval(
            "INSERT INTO audit_log (at, actor, roles, action, target, result)"
            " VALUES ($1, 'retention-test', '{sre}', 'test.seed', $2, '{}') RETURNING id",
            days_ago(age_days), f"ret-{uid}")
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_stamp")
    return row_id
