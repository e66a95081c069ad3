"""Operator-side changes to a test database."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg


@contextlib.asynccontextmanager
async def refusing_site(pool: asyncpg.Pool, site: str) -> AsyncIterator[None]:
    """An operator's constraint that makes the database refuse `site`'s journeys, standing in for any
    database-side refusal of a valid event (it becomes an `apply_error`); dropped on exit."""
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.site = '{site}' THEN RAISE EXCEPTION 'site is closed for maintenance'; END IF;
        RETURN NEW; END $$;
        CREATE TRIGGER {name} BEFORE INSERT ON journeys FOR EACH ROW EXECUTE FUNCTION {name}();
    """)
    try:
        yield
    finally:
        await pool.execute(f"DROP TRIGGER {name} ON journeys; DROP FUNCTION {name}()")


async def blocked_by(holder: asyncpg.Connection) -> bool:
    """Whether another session waits for a lock `holder` holds."""
    return await holder.fetchval("SELECT count(*) > 0 FROM pg_stat_activity"
                                 " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))")
