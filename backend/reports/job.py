"""The roll-up as a background task of every backend; the advisory lock lets one replica work at a time and
the upsert makes a second pass harmless."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import asyncpg

from backend.reports.services import roll_up_recent
from backend.sites.config import SiteDirectory

log = logging.getLogger(__name__)


async def run_reports(pool: asyncpg.Pool, sites: SiteDirectory, interval_s: float) -> None:
    while True:
        try:
            await roll_up_recent(pool, sites, datetime.now(UTC))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("daily reports not computed, next attempt in %.0fs: %s", interval_s, exc)
        await asyncio.sleep(interval_s)
