"""The live `reconciliation` topic: a snapshot per client's sites, and updates where runs finish and items
change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from backend.live.bus import LiveBus
from backend.reconciliation import services
from backend.reconciliation.schemas import LiveEntry

# The board shows the drift to act on now, not all history.
DRIFT_IN_SNAPSHOT = 200


def status_key(system: str, site: str) -> str:
    """One key per system and site: a client of several sites keeps each site's status."""
    return f"status:{system}:{site}"


async def snapshot(conn: asyncpg.Connection, sites: list[str] | None) -> list[Any]:
    entries = [LiveEntry(key=status_key(s.system, s.site), status=s)
               for s in await services.statuses(conn, sites=sites)]
    for status in ("open", "repairing"):
        items = await services.list_drift(conn, sites=sites, status=status, system=None, kind=None,
                                          limit=DRIFT_IN_SNAPSHOT, before=None)
        entries += [LiveEntry(key=f"drift:{item.id}", drift=item) for item in items]
    return entries


async def publish_status(bus: LiveBus, conn: asyncpg.Connection, system: str, site: str) -> None:
    """Announce a run's status as it now is (call after the change is committed)."""
    for status in await services.statuses(conn, sites=[site], system=system):
        key = status_key(system, site)
        await bus.publish("reconciliation", site, key, LiveEntry(key=key, status=status))


async def publish_drift(bus: LiveBus, conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    """Announce drift items as they now are (call after the change is committed)."""
    for start in range(0, len(ids), 500):
        for item in await services.get_drift(conn, ids[start:start + 500]):
            await bus.publish("reconciliation", item.site, f"drift:{item.id}",
                              LiveEntry(key=f"drift:{item.id}", drift=item))
