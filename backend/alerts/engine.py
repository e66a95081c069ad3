"""The alert engine: every replica evaluates the rules every `alert_check_interval_s`, in one transaction
per round; the database's unique index lets only one replica raise (or resolve) each alert, and only
that one announces it and queues its webhooks."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import asyncpg

from backend import metrics
from backend.alerts import conditions, services
from backend.alerts.announce import announce_alert
from backend.alerts.rules import Rule
from backend.alerts.schemas import Alert
from backend.db import lock_key
from backend.live.bus import LiveBus
from backend.sites.config import SiteDirectory

log = logging.getLogger(__name__)
_ROUND_LOCK = lock_key("alert rules round")


class AlertEngine:
    def __init__(self, pool: asyncpg.Pool, bus: LiveBus, rules: tuple[Rule, ...], sites: SiteDirectory, *,
                 webhooks: tuple[str, ...], interval_s: float) -> None:
        self.pool = pool
        self.bus = bus
        self.rules = rules
        self.sites = sites
        self.webhooks = webhooks
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # the engine outlives any one failure: Postgres or NATS away
                log.exception("alert rules not evaluated; trying again")
            await asyncio.sleep(self.interval_s)

    async def check(self) -> list[Alert]:
        """One round: raise what is due, resolve what cleared; returns (and announces) what changed here."""
        changed: list[Alert] = []
        async with self.pool.acquire() as conn:
            async with self.bus.after_commit(conn) as announce:
                # replicas take turns (no deadlock between their updates); the unique index raises once
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _ROUND_LOCK)
                # the database's clock, the one `alert_pending.since` is stamped with
                now: datetime = await conn.fetchval("SELECT now()")
                still: list[tuple[str, str]] = []
                for rule in self.rules:
                    found = await conditions.firing(conn, rule, self.sites, now)
                    since = await services.held_since(conn, rule, found)
                    still += [(rule.name, f.subject) for f in found]
                    for item in found:
                        if (now - since[item.subject]).total_seconds() < rule.for_minutes * 60:
                            continue
                        raised = await services.raise_alert(conn, rule, item, self.webhooks)
                        if raised is not None:
                            metrics.ALERTS_RAISED.labels(rule.name).inc()
                            changed.append(raised)
                changed += await services.resolve_cleared(conn, still, self.webhooks)
                for alert in changed:
                    announce_alert(announce, alert)
            active, pending = await services.counts(conn)
        for rule in self.rules:
            metrics.ALERTS_ACTIVE.labels(rule.name).set(active.get(rule.name, 0))
        metrics.ALERT_DELIVERIES_PENDING.set(pending)
        return changed
