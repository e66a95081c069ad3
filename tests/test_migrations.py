"""Migrations: applied once, in order, even when several backends start at the same moment."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from backend import db
from tests.support.backends import with_database


async def test_concurrent_migrations_apply_each_file_once(server_urls):
    name = f"switchboard_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_urls["database_url"])
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(server_urls["database_url"], name)
        conns = [await asyncpg.connect(url) for _ in range(4)]
        results = await asyncio.gather(*(db.migrate(c) for c in conns))
        files = [p.name for p in db.migration_files()]
        assert sorted(results, key=len)[-1] == files, "one starter applies everything"
        assert sum(len(r) for r in results) == len(files), "the others find nothing left to do"
        assert await db.migrate(conns[0]) == []
        applied = await conns[0].fetch("SELECT version FROM schema_migrations ORDER BY 1")
        assert [r["version"] for r in applied] == files
        for c in conns:
            await c.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
