"""The reconciler of one backend replica: scheduled runs, on-demand runs, fallback replays, repair checks.

Several replicas may run it at once. A run holds an advisory lock on (system, site) for as long as it
lasts, so runs of the same system and site never overlap; a scheduled run is skipped when that pair
had a run within the interval, whichever replica made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import asyncpg
from nats.errors import Error as NatsError

from backend.db import lock_key
from backend.integrations.health import MISSED_INTERVALS
from backend.reconciliation import live, replay, runs, services, verify
from backend.reconciliation.repair import SWITCHBOARD, resolve
from backend.reconciliation.schemas import Run
from backend.reconciliation.snapshot_client import SnapshotClient
from backend.resources import Resources
from switchboard.events import RESERVED_SYSTEMS
from switchboard.waits import stop_tasks

log = logging.getLogger(__name__)
_UNAVAILABLE = (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                asyncpg.ConnectionDoesNotExistError,
                asyncpg.AdminShutdownError, asyncpg.TooManyConnectionsError, TimeoutError, NatsError)
_AUTO_REASON = "auto-repair (SWITCHBOARD_RECONCILE_AUTO_REPAIR)"
# (system, site) pairs per pass of a scheduled round: small, so the most overdue are chosen again often
_PAIRS_PER_PASS = 20
_T = TypeVar("_T")
# the sites of the day's journeys, the one any system reconciled longest ago first
SITES_BY_LAST_RUN_SQL = (
    "SELECT j.site FROM journeys j WHERE j.updated_at > now() - interval '1 day' GROUP BY j.site"
    " ORDER BY (SELECT max(r.started_at) FROM reconciliation_runs r WHERE r.site = j.site) NULLS FIRST,"
    " max(j.updated_at) DESC")


class Reconciler:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.pool = resources.pool
        settings = resources.settings.reconciliation
        self.client = SnapshotClient(resources.nc, settings.reconcile_snapshot_timeout_s,
                                     settings.reconcile_snapshot_max_records)
        self.stale_after = timedelta(seconds=settings.reconcile_stale_after_s)
        self.auto_repair = frozenset(settings.reconcile_auto_repair)
        self._tasks: set[asyncio.Task[Run]] = set()

    # --- runs -----------------------------------------------------------------------------------

    async def begin(self, system: str, site: str, day: date, *, trigger: str,
                    requested_by: str | None) -> tuple[Run | None, asyncio.Task[Run] | None]:
        """Start a run in the background; or, when this system and site has one in progress, that run and no
        task."""
        conn = await self.pool.acquire()
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)",
                                       lock_key(f"reconcile {system} {site}")):
                row = await conn.fetchrow("SELECT * FROM reconciliation_runs WHERE system = $1 AND site = $2"
                                          " AND status = 'running' ORDER BY id DESC LIMIT 1", system, site)
                await self.pool.release(conn)
                return (services.to_run(row) if row else None), None
            # holding the lock, any other `running` row of this pair is one whose backend stopped mid-run
            await conn.execute("UPDATE reconciliation_runs SET status = 'error', error = 'interrupted: its"
                               " backend' || ' stopped', finished_at = now() WHERE system = $1 AND site = $2"
                               " AND status = 'running'", system, site)
            row = await conn.fetchrow("INSERT INTO reconciliation_runs (system, site, day, trigger,"
                                      " requested_by) VALUES ($1, $2, $3, $4, $5) RETURNING *",
                                      system, site, day, trigger, requested_by)
        except BaseException:
            await self.pool.release(conn)
            raise
        task = asyncio.create_task(self._carry_on(conn, row), name=f"reconcile-{system}-{site}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return services.to_run(row), task

    async def run_now(self, system: str, site: str, day: date, *, trigger: str,
                      requested_by: str | None) -> Run | None:
        """Run and wait for the result; None when a run of this system and site was already in progress."""
        _, task = await self.begin(system, site, day, trigger=trigger, requested_by=requested_by)
        return await task if task else None

    async def _carry_on(self, conn: asyncpg.Connection, row: asyncpg.Record) -> Run:
        system, site = row["system"], row["site"]
        try:
            await live.publish_status(self.resources.live, conn, system, site)
            try:
                run, changed = await runs.execute(conn, self.client, row, stale_after=self.stale_after)
            except Exception as exc:
                log.exception("reconciliation run %s (%s at %s) failed", row["id"], system, site)
                failed = await conn.fetchrow(
                    "UPDATE reconciliation_runs SET status = 'error', error = $2, finished_at ="
                    " clock_timestamp()"
                    " WHERE id = $1 RETURNING *", row["id"], f"{type(exc).__name__}: {exc}"[:500])
                run, changed = services.to_run(failed), []
            await live.publish_drift(self.resources.live, conn, changed)
            await live.publish_status(self.resources.live, conn, system, site)
        finally:
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock($1)", lock_key(f"reconcile {system} {site}"))
            await self.pool.release(conn)
        if changed and self.auto_repair:
            await self._auto_repair(changed)
        return run

    async def _auto_repair(self, drift_ids: list[int]) -> None:
        async with self.pool.acquire() as conn:
            due = [r["id"] for r in await conn.fetch(
                "SELECT id FROM drift_items WHERE id = ANY($1::bigint[]) AND status = 'open' AND NOT conflict"
                " AND kind = ANY($2::text[]) ORDER BY id", drift_ids, sorted(self.auto_repair))]
        for drift_id in due:
            try:
                await resolve(self.resources, SWITCHBOARD, drift_id, None, _AUTO_REASON)
            except Exception as exc:  # noqa: BLE001 - an item auto-repair cannot settle stays open for a person
                log.info("auto-repair left drift %s open: %s", drift_id, exc)

    async def scheduled_runs(self, limit: int) -> int:
        """Runs for up to `limit` (system, site) pairs due (not run within the interval), the most overdue
        first; how many it ran: fewer than `limit` when no more were due."""
        interval = self.resources.settings.reconciliation.reconcile_interval_s
        async with self.pool.acquire() as conn:
            # systems whose connector is alive and reaching its upstream: asking one that is down costs a
            # snapshot timeout per site and finds nothing (its fallback's end asks it once it is back)
            systems = [r["system"] for r in await conn.fetch(
                "SELECT DISTINCT system FROM heartbeats WHERE upstream <> 'down'"
                " AND seen_at > now() - make_interval(secs => $1) ORDER BY 1",
                self.resources.settings.integrations.heartbeat_interval_s * MISSED_INTERVALS)
                if r["system"] not in RESERVED_SYSTEMS]
            # the sites reconciled longest ago first (never: first of all), so a long round starves none, not
            # even a site whose journeys all stopped moving, which is the one most likely to have drifted
            sites = [r["site"] for r in await conn.fetch(SITES_BY_LAST_RUN_SQL)]
        today = datetime.now(UTC).date()
        ran = 0
        for system in systems:
            for site in sites:
                if ran >= limit:
                    return ran
                # asked pair by pair, just before: another replica's round may have run it a moment ago
                async with self.pool.acquire() as conn:
                    ran_lately = await conn.fetchval(
                        "SELECT true FROM reconciliation_runs WHERE system = $1 AND site = $2"
                        " AND started_at > now() - make_interval(secs => $3) LIMIT 1", system, site,
                        interval * 0.9)
                if ran_lately:
                    continue
                run = await self.run_now(system, site, today, trigger="schedule", requested_by=None)
                ran += 1
                if run is not None and run.status == "unreachable":
                    break  # its other sites wait for the next round, not a snapshot timeout each
        return ran

    # --- the loop -------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        """Scheduled rounds and the short tick (replays, repair checks) as two loops: a long round of runs
        never holds up the verification of a repair."""
        await asyncio.gather(self._schedule_loop(), self._tick_loop())

    async def _schedule_loop(self) -> None:
        interval = self.resources.settings.reconciliation.reconcile_interval_s
        if interval <= 0:
            return
        await asyncio.sleep(interval)  # a fresh start leaves the first round a while
        while True:
            # a round in short passes, each re-reading which pairs are most overdue: a site that appears
            # during a long round (never reconciled: first of all) waits for one pass, not the whole round
            ran = await self._guarded(self.scheduled_runs(_PAIRS_PER_PASS))
            await asyncio.sleep(0 if ran == _PAIRS_PER_PASS else interval)

    async def _tick_loop(self) -> None:
        settings = self.resources.settings.reconciliation
        timeout = timedelta(seconds=settings.reconcile_repair_timeout_s)
        while True:
            await self._guarded(replay.replay_due(self))
            await self._guarded(verify.verify_repairs(self.pool, self.resources.live, self.client,
                                                      stale_after=self.stale_after, timeout=timeout))
            await asyncio.sleep(settings.reconcile_tick_s)

    @staticmethod
    async def _guarded(step: Awaitable[_T]) -> _T | None:
        try:
            return await step
        except _UNAVAILABLE as exc:
            log.warning("reconciler paused (%s)", type(exc).__name__)
        except Exception:
            log.exception("reconciler round failed; trying again next round")
        return None

    async def stop(self) -> None:
        await stop_tasks(list(self._tasks))
