"""The Postgres pool, the numbered migrations in `sql/`, and the roles they run as.

Two roles (docs/security.md): the owner applies the migrations and owns every table; the backend runs
as a runtime role that may only read and write rows (sql/011). One URL for both still works: then the
backend migrates as the role it runs as, which must own the tables.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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


class MigrationsPendingError(RuntimeError):
    """Migrations are due and the role at hand may not apply them."""


async def migrate(conn: asyncpg.Connection, *, runtime_role: str | None = None) -> list[str]:
    """Apply the migrations not yet applied, then (given `runtime_role`) grant that role what it may do;
    safe when several backends start at once. With nothing to apply it changes nothing, so the runtime
    role itself may call it to check that the database is up to date."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
            await _as_owner(conn, "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
                                  " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        done = {r["version"]: r["checksum"] for r in rows}
        for path in migration_files():
            text = path.read_text()
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if path.name in done:
                if done[path.name] != checksum:
                    raise RuntimeError(f"migration {path.name} changed after it was applied; add a new one"
                                       " instead")
                continue
            async with conn.transaction():
                await _as_owner(conn, text, path.name)
                await conn.execute("INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                                   path.name, checksum)
            applied_now.append(path.name)
        if runtime_role:
            await conn.execute("SELECT grant_runtime_privileges($1)", runtime_role)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def _as_owner(conn: asyncpg.Connection, sql: str, what: str = "schema_migrations") -> None:
    try:
        await conn.execute(sql)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationsPendingError(
            f"migration {what} is due and this role may not apply it ({exc}): run `switchboard migrate` with "
            "SWITCHBOARD_DATABASE_OWNER_URL, or give the backend that URL too") from exc


async def migrate_with_owner(conn: asyncpg.Connection, owner_url: str | None) -> list[str]:
    """Migrate as the owner when its URL is given, granting the role of `conn` (the runtime role) its
    rights; else as the role of `conn` itself (one URL for both)."""
    if not owner_url:
        return await migrate(conn)
    runtime_role: str = await conn.fetchval("SELECT current_user")
    owner = await asyncpg.connect(owner_url)
    try:
        same = runtime_role == await owner.fetchval("SELECT current_user")
        return await migrate(owner, runtime_role=None if same else runtime_role)
    finally:
        await owner.close()


RUNTIME_ROLE = "switchboard_app"
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


async def ensure_runtime_role(admin: asyncpg.Connection, role: str = RUNTIME_ROLE) -> None:
    """Create the backend's login role for local setups (embedded servers, the demo, the tests): no
    superuser, no CREATEDB or CREATEROLE, no password (those servers trust loopback). Roles belong to
    the whole cluster, which several sessions may share: one created meanwhile by another is the same."""
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"not a plain role name: {role!r}")
    await admin.execute(f"""DO $$ BEGIN
        CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END $$""")
    if await admin.fetchval("SELECT rolsuper OR rolbypassrls OR NOT rolcanlogin FROM pg_roles"
                            " WHERE rolname = $1", role):
        raise RuntimeError(f"role {role} exists with rights other than a runtime role's"
                           " (superuser, no login)")


def with_role(url: str, role: str) -> str:
    """`url` as `role` (no password: for servers that trust loopback)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    return await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=60)


def lock_key(text: str) -> int:
    """A Postgres advisory lock key for a name: every replica derives the same one."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)
