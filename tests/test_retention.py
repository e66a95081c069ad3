"""Retention: old rows go, recent ones stay, and what is still in use is never purged; the audit log
stays append-only for everything younger than the database's floor."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import asyncpg
import pytest

from backend.retention.services import RetentionPolicy, check_audit_floor, purge
from tests.support.backends import backend_env, start_backend
from tests.support.rows import add_audit, add_event, days_ago
from tests.support.settings import backend_settings
from tests.support.waits import eventually

DEFAULTS = RetentionPolicy.from_settings(backend_settings())  # what every backend of the session purges with


async def add_command(pool: asyncpg.Pool, uid: str, status: str, age_days: float) -> uuid.UUID:
    command_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO commands (id, rule, system, command, journey_id, refs, site, data, status, updated_at)"
        " VALUES ($1, 'retention-test', 'queue', 'staff.alert', $2, $3, $4, '{}', $5, $6)",
        command_id, uuid.uuid4(), [f"queue:C-{uid}"], f"ret-{uid}", status, days_ago(age_days))
    return command_id


async def add_failure(pool: asyncpg.Pool, uid: str, status: str, age_days: float,
                      command_id: uuid.UUID | None = None) -> int:
    return await pool.fetchval(
        "INSERT INTO failures (dedupe_key, kind, status, site, command_id, reason, payload, first_at,"
        " last_at) VALUES ($1, $2, $3, $4, $5, 'retention test', '{}', $6, $6) RETURNING id",
        f"retention-{uuid.uuid4().hex}", "command_failed" if command_id else "invalid_event", status,
        f"ret-{uid}", str(command_id) if command_id else None, days_ago(age_days))


async def test_old_rows_go_recent_ones_stay_and_nothing_in_use_is_purged(pool, uid):
    old_event, recent_event = await add_event(pool, uid, "old", 31), await add_event(pool, uid, "new", 29)
    await pool.execute("INSERT INTO webhook_receipts (system, webhook_id, received_at) VALUES"
                       " ('queue', $1, $2), ('queue', $3, now())",
                       f"old-{uid}", days_ago(2), f"new-{uid}")
    settled_old = {s: await add_command(pool, uid, s, 31) for s in ("ok", "failed")}
    in_flight_old = {s: await add_command(pool, uid, s, 31) for s in ("pending", "held", "sent")}
    ok_recent = await add_command(pool, uid, "ok", 1)
    failed_with_open_failure = await add_command(pool, uid, "failed", 31)
    open_command_failure = await add_failure(pool, uid, "open", 91, failed_with_open_failure)
    closed_old = [await add_failure(pool, uid, s, 91) for s in ("resolved", "discarded")]
    unsettled_old = [await add_failure(pool, uid, s, 91) for s in ("open", "retrying")]
    resolved_recent = await add_failure(pool, uid, "resolved", 89)
    audit_old, audit_kept = await add_audit(pool, uid, 401), await add_audit(pool, uid, 100)

    counts = await eventually(lambda: purge(pool, DEFAULTS))  # None while a backend's own purge runs
    assert set(counts) == {"events", "inbox", "webhook_receipts", "outbox", "floor_steps", "failures",
                           "drift", "reconciliation_runs", "fallback_ledger", "fallbacks", "manual_tickets",
                           "alerts", "reports", "journeys", "audit"}

    events = {(r["source"], r["id"]) for r in await pool.fetch(
        "SELECT source, id FROM events WHERE site = $1", f"ret-{uid}")}
    assert events == {recent_event}, "the 31-day-old inbox row goes, the 29-day-old one stays"
    assert old_event not in events
    inbox = {(r["source"], r["id"]) for r in await pool.fetch(
        "SELECT source, id FROM event_inbox WHERE id = ANY($1::text[])", [old_event[1], recent_event[1]])}
    assert inbox == {recent_event}, "idempotency is forgotten with the event, not before"
    receipts = {r["webhook_id"] for r in await pool.fetch(
        "SELECT webhook_id FROM webhook_receipts WHERE webhook_id = ANY($1::text[])",
        [f"old-{uid}", f"new-{uid}"])}
    assert receipts == {f"new-{uid}"}
    commands = {r["id"] for r in await pool.fetch("SELECT id FROM commands WHERE site = $1", f"ret-{uid}")}
    assert commands == {*in_flight_old.values(), ok_recent, failed_with_open_failure}
    failures = {r["id"] for r in await pool.fetch("SELECT id FROM failures WHERE site = $1", f"ret-{uid}")}
    assert failures == {open_command_failure, *unsettled_old, resolved_recent}
    audit = {r["id"] for r in await pool.fetch("SELECT id FROM audit_log WHERE target = $1", f"ret-{uid}")}
    assert audit == {audit_kept}, "the 401-day-old audit row goes (400 days kept), the 100-day-old one stays"
    assert audit_old not in audit
    assert not set(settled_old.values()) & commands and not set(closed_old) & failures


async def test_a_floor_step_id_goes_with_its_command_never_before(pool, uid):
    steps = {}
    for name, status, age in (("settled", "ok", 31), ("in_flight", "sent", 31), ("recent", "ok", 1)):
        command_id = await add_command(pool, uid, status, age)
        steps[name] = f"step-{name}-{uid}"
        await pool.execute("INSERT INTO floor_steps (step_id, journey_id, site, action, actor, command_id,"
                           " created_at) VALUES ($1, $2, $3, 'call', 'tester', $4, $5)",
                           steps[name], uuid.uuid4(), f"ret-{uid}", command_id, days_ago(age))
    await eventually(lambda: purge(pool, DEFAULTS))
    kept = {r["step_id"] for r in await pool.fetch(
        "SELECT step_id FROM floor_steps WHERE site = $1", f"ret-{uid}")}
    assert kept == {steps["in_flight"], steps["recent"]}


async def add_run(pool: asyncpg.Pool, uid: str, system: str, age_days: float) -> int:
    return await pool.fetchval(
        "INSERT INTO reconciliation_runs (system, site, day, trigger, status, started_at, finished_at)"
        " VALUES ($1, $2, $3::timestamptz::date, 'schedule', 'done', $3, $3) RETURNING id",
        system, f"ret-{uid}", days_ago(age_days))


async def add_drift(pool: asyncpg.Pool, uid: str, run_id: int, status: str, age_days: float) -> int:
    closed = status in ("resolved", "ignored")
    return await pool.fetchval(
        "INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, kind, status, detected_at,"
        " updated_at, resolved_at)"
        " VALUES ($1, $2, 'queue', $3, $4, 'missing_here', $5, $6, $6, $7) RETURNING id",
        f"ret|{uuid.uuid4().hex}", run_id, f"ret-{uid}", f"queue:D-{uid}", status, days_ago(age_days),
        days_ago(age_days) if closed else None)


async def add_fallback(pool: asyncpg.Pool, uid: str, system: str, status: str, age_days: float) -> int:
    fallback_id = await pool.fetchval(
        "INSERT INTO fallbacks (site, system, reason, status, started_by, started_at, ended_at)"
        " VALUES ($1, $2, 'retention test', $3, 'tester', $4, $5) RETURNING id",
        f"ret-{uid}", system, status, days_ago(age_days + 1),
        None if status == "active" else days_ago(age_days))
    await pool.execute(
        "INSERT INTO fallback_ledger (fallback_id, seq, action, ref, event_source, event_id, actor, data, at)"
        " VALUES ($1, 1, 'check_in', $2, '/manual/tester', $3, 'tester', '{}', $4)",
        fallback_id, f"manual:W-{uid}", uuid.uuid4().hex, days_ago(age_days))
    return fallback_id


async def test_closed_drift_old_runs_and_ended_fallbacks_go_what_is_in_use_stays(pool, uid):
    old_run, referenced_run, latest_run = (await add_run(pool, uid, "queue", 40),
                                           await add_run(pool, uid, "queue", 35),
                                           await add_run(pool, uid, "queue", 31))
    # the only run of crm here: its status stays on the board
    lone_old_run = await add_run(pool, uid, "crm", 60)
    recent_run = await add_run(pool, uid, "core", 1)
    closed_old = [await add_drift(pool, uid, old_run, s, 91) for s in ("resolved", "ignored")]
    unsettled_old = [await add_drift(pool, uid, referenced_run, s, 200) for s in ("open", "repairing")]
    closed_recent = await add_drift(pool, uid, latest_run, "resolved", 89)
    ended_old = await add_fallback(pool, uid, "queue", "ended", 401)
    kept_fallbacks = {await add_fallback(pool, uid, "crm", "replaying", 500),
                      await add_fallback(pool, uid, "core", "active", 500),
                      await add_fallback(pool, uid, "appointments", "ended", 399)}
    await pool.execute("INSERT INTO manual_tickets (site, day, last) VALUES ($1, $2, 3), ($1, $3, 1)",
                       f"ret-{uid}", days_ago(402).date(), days_ago(0).date())

    counts = await eventually(lambda: purge(pool, DEFAULTS))
    assert counts["drift"] >= 2 and counts["reconciliation_runs"] >= 1 and counts["fallbacks"] >= 1

    site = f"ret-{uid}"
    drift = {r["id"] for r in await pool.fetch("SELECT id FROM drift_items WHERE site = $1", site)}
    assert drift == {*unsettled_old, closed_recent} and not set(closed_old) & drift
    runs = {r["id"] for r in await pool.fetch("SELECT id FROM reconciliation_runs WHERE site = $1", site)}
    assert runs == {referenced_run, latest_run, lone_old_run, recent_run}, \
        "a run no drift needs goes, unless latest"
    fallbacks = {r["id"] for r in await pool.fetch("SELECT id FROM fallbacks WHERE site = $1", site)}
    assert fallbacks == kept_fallbacks and ended_old not in fallbacks
    ledger = {r["fallback_id"] for r in await pool.fetch(
        "SELECT fallback_id FROM fallback_ledger WHERE fallback_id = ANY($1::bigint[])",
        [ended_old, *kept_fallbacks])}
    assert ledger == kept_fallbacks
    days = [r["day"] for r in await pool.fetch("SELECT day FROM manual_tickets WHERE site = $1", site)]
    assert days == [days_ago(0).date()]


async def test_a_fallback_still_to_replay_keeps_its_steps_inbox_rows(pool, uid):
    """A fallback running longer than the events are kept still tells at its replay a step already applied
    (its inbox row) from one to send again: that one would be applied twice, its commands sent again."""
    steps = {}
    for status in ("active", "replaying", "ended"):
        fallback_id = await add_fallback(pool, uid, f"lab_{status}", status, 1)
        step = await pool.fetchrow(
            "SELECT event_source, event_id FROM fallback_ledger WHERE fallback_id = $1", fallback_id)
        await pool.execute("INSERT INTO event_inbox (source, id, applied_at) VALUES ($1, $2, $3)",
                           step["event_source"], step["event_id"], days_ago(40))
        steps[status] = step["event_id"]

    await eventually(lambda: purge(pool, DEFAULTS))
    kept = {r["id"] for r in await pool.fetch("SELECT id FROM event_inbox WHERE id = ANY($1::text[])",
                                              list(steps.values()))}
    assert kept == {steps["active"], steps["replaying"]}, "an ended fallback's steps go with their age"


async def add_journey(pool: asyncpg.Pool, uid: str, name: str, stage: str, age_days: float) -> uuid.UUID:
    journey_id = uuid.uuid4()
    await pool.execute("INSERT INTO journeys (id, site, stage, state, created_at, updated_at)"
                       " VALUES ($1, $2, $3, '{}', $4, $4)",
                       journey_id, f"ret-{uid}", stage, days_ago(age_days))
    await pool.execute("INSERT INTO journey_refs (ref, journey_id) VALUES ($1, $2)", f"queue:{name}-{uid}",
                       journey_id)
    return journey_id


async def test_a_finished_journey_goes_with_its_references_unless_something_still_names_it(pool, uid):
    gone = await add_journey(pool, uid, "GONE", "completed", 91)
    merged_into_it = uuid.uuid4()
    await pool.execute("INSERT INTO journey_aliases (old_id, new_id) VALUES ($1, $2)", merged_into_it, gone)
    kept = {
        "finished lately": await add_journey(pool, uid, "LATELY", "completed", 89),
        "still waiting": await add_journey(pool, uid, "WAITING", "waiting", 200),
        "a command to settle": await add_journey(pool, uid, "COMMAND", "no_show", 91),
        "an open failure": await add_journey(pool, uid, "FAILURE", "cancelled", 91),
        "open drift": await add_journey(pool, uid, "DRIFT", "completed", 91),
        "a fallback to replay": await add_journey(pool, uid, "FALLBACK", "completed", 91),
    }
    await pool.execute("UPDATE commands SET journey_id = $1 WHERE id = $2", kept["a command to settle"],
                       await add_command(pool, uid, "held", 91))
    await pool.execute("UPDATE failures SET journey_id = $1 WHERE id = $2", kept["an open failure"],
                       await add_failure(pool, uid, "open", 91))
    await pool.execute("UPDATE drift_items SET journey_id = $1 WHERE id = $2", kept["open drift"],
                       await add_drift(pool, uid, await add_run(pool, uid, "queue", 1), "open", 91))
    await pool.execute("UPDATE fallback_ledger SET journey_id = $1 WHERE fallback_id = $2",
                       kept["a fallback to replay"], await add_fallback(pool, uid, "queue", "replaying", 91))

    await eventually(lambda: purge(pool, DEFAULTS))
    journeys = {r["id"] for r in await pool.fetch("SELECT id FROM journeys WHERE site = $1", f"ret-{uid}")}
    assert journeys == set(kept.values()), {n for n, j in kept.items() if j not in journeys}
    refs = {r["ref"] for r in await pool.fetch("SELECT ref FROM journey_refs WHERE ref LIKE $1", f"%-{uid}")}
    assert f"queue:GONE-{uid}" not in refs and len(refs) == len(kept)
    assert await pool.fetchval("SELECT count(*) FROM journey_aliases WHERE new_id = $1", gone) == 0


async def test_a_dry_run_counts_and_deletes_nothing(pool, uid):
    await add_event(pool, uid, "old", 40)
    counts = await eventually(lambda: purge(pool, DEFAULTS, dry_run=True))
    assert counts["events"] >= 1
    assert await pool.fetchval("SELECT count(*) FROM events WHERE site = $1", f"ret-{uid}") == 1


async def test_the_application_cannot_alter_or_delete_recent_audit_rows(pool, uid):
    recent, old = await add_audit(pool, uid, 10), await add_audit(pool, uid, 200)
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE audit_log SET reason = 'rewritten' WHERE id = $1", old)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit_log WHERE id = $1", old)  # old, but not through the purge
        async with conn.transaction():  # even with the purge's own switch set by hand, recent rows stay
            await conn.execute("SELECT set_config('switchboard.audit_purge', 'on', true)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit_log WHERE id = $1", recent)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("TRUNCATE audit_log")
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await conn.fetchval("SELECT purge_audit_log(interval '1 day')")
        # a backdated insert is dated now, so it cannot be made old enough to purge
        at = await conn.fetchval("INSERT INTO audit_log (at, actor, roles, action, target, result) VALUES"
                                 " ('2000-01-01', 'x', '{sre}', 'test.backdate', $1, '{}') RETURNING at",
                                 f"ret-{uid}")
        assert at > days_ago(1)
    still_there = await pool.fetchval("SELECT count(*) FROM audit_log WHERE id = ANY($1::bigint[])",
                                      [recent, old])
    assert still_there == 2


async def test_settings_below_what_is_safe_are_refused(pool):
    with pytest.raises(ValueError, match="duplicate window"):
        RetentionPolicy.from_settings(backend_settings(retention_events_days=0.001))
    with pytest.raises(ValueError, match="tolerance"):
        RetentionPolicy.from_settings(backend_settings(retention_webhook_receipts_days=0.001))
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match="floor"):
            short = RetentionPolicy.from_settings(backend_settings(retention_audit_days=30))
            await check_audit_floor(conn, short)


async def test_the_backend_purges_in_the_background_and_operators_with_the_cli(settings, workdir, pool, uid):
    process = start_backend(settings, workdir / "backend-retention.log", {
        "SWITCHBOARD_RETENTION_INTERVAL_S": "0.5", "SWITCHBOARD_RETENTION_EVENTS_DAYS": "2"})
    try:
        await add_event(pool, uid, "old", 3)
        await add_event(pool, uid, "new", 1)

        async def purged():
            return await pool.fetchval("SELECT count(*) FROM events WHERE site = $1", f"ret-{uid}") == 1

        await eventually(purged)
    finally:
        process.stop()

    await add_event(pool, uid, "older", 35)
    env = {**backend_env(settings), "SWITCHBOARD_LOG_LEVEL": "WARNING"}
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "tools.cli", "purge"], env=env,
                                   capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "events: removed" in done.stdout and "audit: removed" in done.stdout
    assert await pool.fetchval("SELECT count(*) FROM events WHERE site = $1", f"ret-{uid}") == 1


async def test_the_audit_purge_deletes_from_the_real_log_whatever_temporary_table_a_session_made(pool, uid):
    old = await add_audit(pool, uid, 401)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("CREATE TEMPORARY TABLE audit_log (at timestamptz) ON COMMIT DROP")
        await conn.execute("INSERT INTO audit_log VALUES (now() - interval '500 days')")
        assert await conn.fetchval("SELECT purge_audit_log(interval '400 days')") >= 1
        assert await conn.fetchval("SELECT count(*) FROM pg_temp.audit_log") == 1  # the decoy untouched
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE id = $1", old) == 0
