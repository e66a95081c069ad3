"""What each topic's snapshot holds, read from Postgres for the client's sites.

A new topic's domain adds its reader here and announces its changes on the `LiveBus` (backend/live/bus.py).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from backend.alerts.services import snapshot as alerts_snapshot
from backend.failures.services import list_failures
from backend.fallbacks.services import snapshot as fallbacks_snapshot
from backend.integrations.services import snapshot as integrations_snapshot
from backend.journeys.services import list_journeys
from backend.operations.services import capacity, flow
from backend.reconciliation import live as reconciliation

# The board shows what is happening now: the most recent journeys and open failures, not all history.
JOURNEYS_IN_SNAPSHOT = 500
FAILURES_IN_SNAPSHOT = 200

SnapshotReader = Callable[[asyncpg.Connection, list[str] | None], Awaitable[list[Any]]]


async def _journeys(conn: asyncpg.Connection, sites: list[str] | None) -> list[Any]:
    page = await list_journeys(
        conn, sites=sites, stage=None, ref=None, limit=JOURNEYS_IN_SNAPSHOT, cursor=None
    )
    return page.items


async def _failures(conn: asyncpg.Connection, sites: list[str] | None) -> list[Any]:
    return await list_failures(
        conn,
        sites=sites,
        status="open",
        kind=None,
        system=None,
        limit=FAILURES_IN_SNAPSHOT,
        cursor=None,
    )


def snapshot_readers(targets: str) -> dict[str, SnapshotReader]:
    """Each topic's reader; `targets`: the sites' wait targets flow measures against."""
    return {
        "flow": functools.partial(flow, targets=targets),
        "capacity": capacity,
        "journeys": _journeys,
        "failures": _failures,
        "reconciliation": reconciliation.snapshot,
        "fallbacks": fallbacks_snapshot,
        "integrations": integrations_snapshot,
        "alerts": alerts_snapshot,
    }
