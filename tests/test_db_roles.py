"""Least privilege in Postgres (sql/011, docs/security.md): the backend's runtime role reads and writes
rows and nothing more; what needs more goes through the owner's guarded functions. Every refusal is
checked against the state before and after it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from backend import db
from backend.ingest.partitions import ensure_partitions
from backend.retention.services import RetentionPolicy, purge
from backend.settings import BackendSettings
from tests.support.backends import backend_env
from tests.support.events import cloud_event, publish
from tests.support.rows import add_audit, add_event
from tests.support.settings import backend_settings
from tests.support.waits import eventually
from tools.bench.common import scratch_database

DENIED = asyncpg.InsufficientPrivilegeError
DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
NEVER = ("TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.fixture
async def runtime(settings: BackendSettings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database.database_url)
    yield conn
    await conn.close()


async def _trigger_states(pool: asyncpg.Pool) -> dict[str, str]:
    rows = await pool.fetch("SELECT tgname, tgenabled::text FROM pg_trigger"
                            " WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal")
    return {r["tgname"]: r["tgenabled"] for r in rows}


async def _columns(pool: asyncpg.Pool, table: str) -> list[str]:
    return [r["column_name"] for r in await pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
        table)]


async def test_the_backend_runs_as_a_role_that_is_neither_owner_nor_superuser(settings, runtime, pool):
    assert urlsplit(backend_env(settings)["SWITCHBOARD_DATABASE_URL"]).username == db.RUNTIME_ROLE
    assert backend_env(settings)["SWITCHBOARD_DATABASE_OWNER_URL"] == ""
    me = await runtime.fetchrow("SELECT current_user AS name, rolsuper, rolcreaterole, rolcreatedb,"
                                " rolbypassrls FROM pg_roles WHERE rolname = current_user")
    assert me["name"] == db.RUNTIME_ROLE
    assert not (me["rolsuper"] or me["rolcreaterole"] or me["rolcreatedb"] or me["rolbypassrls"])
    owners = {r["tableowner"] for r in await pool.fetch(
        "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
    assert db.RUNTIME_ROLE not in owners and len(owners) == 1


async def test_it_cannot_alter_or_drop_a_table(runtime, pool):
    before = await _columns(pool, "journeys")
    with pytest.raises(DENIED, match="must be owner"):
        await runtime.execute("ALTER TABLE journeys ADD COLUMN smuggled text")
    for table in ("audit_log", "journeys", "events"):
        with pytest.raises(DENIED, match="must be owner"):
            await runtime.execute(f"DROP TABLE {table}")
        assert await pool.fetchval("SELECT to_regclass($1)", table) is not None
    assert await _columns(pool, "journeys") == before


async def test_it_cannot_drop_or_disable_the_audit_triggers(runtime, pool):
    before = await _trigger_states(pool)
    assert set(before) >= {"audit_log_no_update_delete", "audit_log_no_truncate", "audit_log_stamp"}
    assert set(before.values()) == {"O"}  # enabled
    for statement in ("DROP TRIGGER audit_log_no_update_delete ON audit_log",
                      "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
                      "ALTER TABLE audit_log DISABLE TRIGGER ALL",
                      "DROP FUNCTION audit_log_is_append_only() CASCADE",
                      ("CREATE OR REPLACE FUNCTION audit_log_is_append_only() RETURNS trigger"
                       " LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$")):
        with pytest.raises(DENIED):
            await runtime.execute(statement)
    assert await _trigger_states(pool) == before


async def test_it_can_add_audit_rows_but_never_change_or_remove_one(runtime, pool, uid):
    recent = await runtime.fetchval("INSERT INTO audit_log (actor, roles, action, target, result) VALUES"
                                    " ('roles-test', '{sre}', 'test.seed', $1, '{}') RETURNING id",
                                    f"roles-{uid}")
    old = await add_audit(pool, uid, 401)  # past the retention floor: only the guarded purge may take it
    rows = "SELECT * FROM audit_log WHERE id = ANY($1::bigint[]) ORDER BY id"
    before = await pool.fetch(rows, [recent, old])
    async with runtime.transaction():
        # the switch only purge_audit_log() should throw: without the DELETE right it opens nothing
        await runtime.execute("SELECT set_config('switchboard.audit_purge', 'on', true)")
        with pytest.raises(DENIED, match="permission denied for table audit_log"):
            await runtime.execute("DELETE FROM audit_log WHERE id = $1", old)
    for statement in ("UPDATE audit_log SET reason = 'rewritten' WHERE id = $1",
                      "DELETE FROM audit_log WHERE id = $1"):
        with pytest.raises(DENIED, match="permission denied for table audit_log"):
            await runtime.execute(statement, recent)
    with pytest.raises(DENIED, match="permission denied for table audit_log"):
        await runtime.execute("TRUNCATE audit_log")
    assert await pool.fetch(rows, [recent, old]) == before


async def test_it_cannot_create_anything_in_the_schema(runtime, pool, uid):
    for statement in (f"CREATE TABLE smuggled_{uid} (x int)", f"CREATE VIEW smuggled_{uid} AS SELECT 1",
                      f"CREATE FUNCTION smuggled_{uid}() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                      (f"CREATE TRIGGER smuggled_{uid} BEFORE INSERT ON journeys FOR EACH ROW"
                       " EXECUTE FUNCTION audit_log_stamp()")):
        with pytest.raises(DENIED):
            await runtime.execute(statement)
    assert await pool.fetchval("SELECT count(*) FROM pg_class WHERE relname = $1", f"smuggled_{uid}") == 0
    assert await pool.fetchval("SELECT count(*) FROM pg_proc WHERE proname = $1", f"smuggled_{uid}") == 0
    assert await pool.fetchval("SELECT count(*) FROM pg_trigger WHERE tgname = $1", f"smuggled_{uid}") == 0


async def test_every_table_is_granted_rows_only_and_the_audit_log_append_only(runtime, pool):
    tables = [r["relname"] for r in await pool.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')"
        " AND NOT relispartition")]
    assert {"audit_log", "schema_migrations", "events", "journeys"} <= set(tables)
    for table in tables:
        may = {p for p in DML + NEVER
               if await runtime.fetchval("SELECT has_table_privilege($1, $2)", table, p)}
        expected = {"audit_log": {"SELECT", "INSERT"}, "schema_migrations": {"SELECT"}}.get(table, set(DML))
        assert may == expected, table
    partitions = [r["relname"] for r in await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass")]
    assert partitions
    for partition in partitions:  # reached through `events` only
        assert not await runtime.fetchval("SELECT has_table_privilege($1, 'SELECT')", partition)


async def test_a_right_granted_by_hand_is_withdrawn_at_the_next_migrate(settings, pool):
    await pool.execute(f"GRANT TRUNCATE, TRIGGER ON journeys, audit_log TO {db.RUNTIME_ROLE}")
    await pool.execute(f"GRANT DELETE ON audit_log TO {db.RUNTIME_ROLE}")
    assert await pool.fetchval("SELECT has_table_privilege($1, 'audit_log', 'DELETE')", db.RUNTIME_ROLE)
    async with pool.acquire() as owner:
        assert await db.migrate(owner, runtime_role=db.RUNTIME_ROLE) == []
    for table, right in (("journeys", "TRUNCATE"), ("audit_log", "TRIGGER"), ("audit_log", "DELETE")):
        assert not await pool.fetchval("SELECT has_table_privilege($1, $2, $3)", db.RUNTIME_ROLE, table,
                                       right)
    assert await pool.fetchval("SELECT has_table_privilege($1, 'journeys', 'UPDATE')", db.RUNTIME_ROLE)


async def test_partitions_come_only_through_the_guarded_function(settings, runtime, pool):
    count = "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
    before = await pool.fetchval(count)
    with pytest.raises(DENIED, match="permission denied for function"):  # any first month: the owner's only
        await runtime.fetchval("SELECT ensure_event_partitions(3, timestamptz '1900-01-01')")
    for months in (-1, 25):
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await runtime.fetchval("SELECT ensure_coming_event_partitions($1)", months)
    with pytest.raises(DENIED, match="permission denied for function"):
        await runtime.execute("SELECT grant_runtime_privileges($1)", db.RUNTIME_ROLE)
    assert await pool.fetchval(count) == before

    runtime_pool = await db.create_pool(settings.database.database_url, min_size=1, max_size=1)
    try:
        created = await ensure_partitions(runtime_pool, months_ahead=6)  # as the backend does, further ahead
    finally:
        await runtime_pool.close()
    assert await pool.fetchval(count) == before + created
    newest = await pool.fetchrow(
        "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass"
        " ORDER BY c.relname DESC LIMIT 1")
    assert newest["owner"] != db.RUNTIME_ROLE
    assert newest["owner"] == await pool.fetchval("SELECT current_user")


async def test_the_purge_runs_as_the_runtime_role(settings, pool, uid):
    old_event, recent_event = await add_event(pool, uid, "old", 31), await add_event(pool, uid, "new", 1)
    audit_old, audit_kept = await add_audit(pool, uid, 401), await add_audit(pool, uid, 100)
    runtime_pool = await db.create_pool(settings.database.database_url, min_size=1, max_size=1)
    try:
        policy = RetentionPolicy.from_settings(backend_settings())
        counts = await eventually(lambda: purge(runtime_pool, policy))  # None while a backend's purge runs
    finally:
        await runtime_pool.close()
    assert counts["events"] >= 1 and counts["audit"] >= 1
    events = {(r["source"], r["id"])
              for r in await pool.fetch("SELECT source, id FROM events WHERE site = $1", f"ret-{uid}")}
    assert events == {recent_event} and old_event not in events
    audit = {r["id"] for r in await pool.fetch("SELECT id FROM audit_log WHERE target = $1", f"ret-{uid}")}
    assert audit == {audit_kept} and audit_old not in audit


async def test_the_backend_ingests_as_the_runtime_role(backend, js, pool, settings, uid):
    ref = f"queue:R-{uid}"
    before = await pool.fetchval("SELECT count(*) FROM events WHERE subject = $1", ref)
    await publish(js, cloud_event("customer.arrived", ref, {"site": f"roles-{uid}", "ticket": "R1"}))
    await eventually(lambda: pool.fetchval("SELECT count(*) FROM events WHERE subject = $1", ref))
    assert before == 0
    name = urlsplit(settings.database.database_owner_url).path.lstrip("/")
    users = {r["usename"] for r in await pool.fetch(
        "SELECT usename FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'", name)}
    assert db.RUNTIME_ROLE in users


async def test_runtime_role_creation_is_idempotent_when_sessions_race(server_urls, uid):
    role = f"switchboard_app_{uid}"
    conns = [await asyncpg.connect(server_urls["database_url"]) for _ in range(4)]
    try:
        await asyncio.gather(*(db.ensure_runtime_role(c, role) for c in conns))
        await db.ensure_runtime_role(conns[0], role)
        row = await conns[0].fetchrow("SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = $1", role)
        assert row["rolcanlogin"] and not row["rolsuper"]
        with pytest.raises(ValueError, match="plain role name"):
            await db.ensure_runtime_role(conns[0], 'x"; DROP ROLE postgres; --')
    finally:
        await conns[0].execute(f"DROP ROLE IF EXISTS {role}")
        for c in conns:
            await c.close()


async def _migrate_command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "tools.cli", "migrate"],
                                   env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_split_urls_migrate_as_owner_and_a_runtime_role_alone_refuses_pending_migrations(
        server_urls, settings, uid):
    async with scratch_database(server_urls["database_url"], f"roles_{uid}") as owner_url:
        runtime_url = db.with_role(owner_url, db.RUNTIME_ROLE)
        alone = backend_env(settings) | {"SWITCHBOARD_DATABASE_URL": runtime_url}
        refused = await _migrate_command(alone)
        assert refused.returncode != 0 and "SWITCHBOARD_DATABASE_OWNER_URL" in refused.stderr
        owner = await asyncpg.connect(owner_url)
        try:
            # nothing half-done
            assert await owner.fetchval("SELECT to_regclass('schema_migrations')") is None
            split = alone | {"SWITCHBOARD_DATABASE_OWNER_URL": owner_url}
            migrated = await _migrate_command(split)
            assert migrated.returncode == 0, migrated.stderr
            assert "applied: 001_core.sql" in migrated.stdout
            assert await owner.fetchval("SELECT count(*) FROM schema_migrations") == len(db.migration_files())
            may = "SELECT has_table_privilege($1, $2, $3)"
            assert await owner.fetchval(may, db.RUNTIME_ROLE, "journeys", "UPDATE")
            assert not await owner.fetchval(may, db.RUNTIME_ROLE, "audit_log", "DELETE")
            # migrated, the runtime role alone finds nothing due (a backend without the owner's URL, at start)
            again = await _migrate_command(alone)
            assert again.returncode == 0 and again.stdout.strip() == "up to date", again.stderr
        finally:
            await owner.close()

