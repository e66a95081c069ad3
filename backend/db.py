"""The Postgres pool and the numbered migrations in `sql/`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg

_SOURCE_SQL = Path(__file__).resolve().parent.parent / "sql"
# a source checkout has `sql/` beside the packages; an installed wheel (the Docker image) has it in
# `switchboard/`
SQL_DIR = _SOURCE_SQL if _SOURCE_SQL.is_dir() else _SOURCE_SQL.parent / "switchboard" / "sql"
_MIGRATION_LOCK = 0x5357_4244  # any constant shared by every backend: serialises concurrent starts


def migration_files() -> list[Path]:
    files = sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    if not files:
        raise RuntimeError(f"no migrations found in {SQL_DIR}")
    return files


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet applied; safe when several backends start at once."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT"
            " now())"
        )
        applied = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        done = {r["version"]: r["checksum"] for r in applied}
        for path in migration_files():
            text = path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if path.name in done:
                if done[path.name] != checksum:
                    raise RuntimeError(f"migration {path.name} changed after it was applied; add a new one"
                                       " instead")
                continue
            async with conn.transaction():
                await conn.execute(text)
                await conn.execute("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                                   path.name, checksum)
            applied_now.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=60)


def lock_key(text: str) -> int:
    """A Postgres advisory lock key for a name: every replica derives the same one."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)
