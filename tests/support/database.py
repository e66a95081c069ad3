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
