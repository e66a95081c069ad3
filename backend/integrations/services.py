"""Reading integration health and traffic per system, and recording a decided status once per change."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from typing import NamedTuple

import asyncpg
import msgspec
import nats.errors
from nats.js import JetStreamContext

from backend.integrations import pace as pacing
from backend.integrations import traffic as counted
from backend.integrations.health import Health
from backend.integrations.schemas import Integration, IntegrationStatus, PaceView
from backend.messaging import APPLY_CONSUMER, EVENTS_STREAM

RATE_WINDOW_MIN = counted.RATE_WINDOW_MIN
SUCCESS_WINDOW_MIN = 15
INBOUND_KINDS = ["invalid_event", "pii_rejected", "source_mismatch", "unauthorized_source", "apply_error"]
_LAG_TIMEOUT_S = 2.0


def _pace_view(pace: pacing.Pace | None) -> PaceView | None:
    if pace is None:
        return None
    return PaceView(rate_per_min=round(pace.rate_per_min, 1), recovering=pace.recovering, reason=pace.reason,
                    floor=pace.floor)


async def statuses(conn: asyncpg.Connection) -> list[IntegrationStatus]:
    """Every system's status as last decided."""
    rows = await conn.fetch(
        "SELECT i.*, (SELECT max(seen_at) FROM heartbeats h WHERE h.system = i.system) AS last_heartbeat_at"
        " FROM integration_status i ORDER BY i.system")
    paces = await pacing.read(conn, [r["system"] for r in rows])
    return [IntegrationStatus(system=r["system"], status=r["status"], reason=r["reason"], since=r["since"],
                              last_heartbeat_at=r["last_heartbeat_at"],
                              pace=_pace_view(paces.get(r["system"])))
            for r in rows]


# the minutes of each system's traffic the figures read (backend/integrations/traffic.py)
_TRAFFIC_SQL = f"""
SELECT system, minute, latency_ms, now() AS now FROM traffic_minutes
WHERE minute >= date_trunc('minute', now()) - interval '{RATE_WINDOW_MIN} minutes'
"""
_INVALID_SQL = f"""
SELECT system, count(*) / {RATE_WINDOW_MIN}.0 AS per_min FROM failures
WHERE last_at > now() - interval '{RATE_WINDOW_MIN} minutes' AND kind = ANY($1::text[]) AND system IS NOT NULL
GROUP BY system
"""
_COMMANDS_SQL = f"""
SELECT system, count(*) FILTER (WHERE status = 'ok') AS ok, count(*) FILTER (WHERE status = 'failed') AS
    failed
FROM commands
WHERE system = ANY($1::text[]) AND status IN ('ok', 'failed')
  AND updated_at > now() - interval '{SUCCESS_WINDOW_MIN} minutes'
GROUP BY system
"""
_HELD_SQL = "SELECT system, count(*) AS n FROM commands WHERE status = 'held' GROUP BY system"


async def integrations(conn: asyncpg.Connection, systems: list[str] | None = None,
                       consumer_lag: int | None = None) -> list[Integration]:
    """Every system's status and figures (or those of `systems`)."""
    current = [s for s in await statuses(conn) if systems is None or s.system in systems]
    names = [s.system for s in current]
    traffic = await _traffic(conn)
    invalid = {r["system"]: r["per_min"] for r in await conn.fetch(_INVALID_SQL, INBOUND_KINDS)}
    settled = {r["system"]: r for r in await conn.fetch(_COMMANDS_SQL, names)}
    held = {r["system"]: r["n"] for r in await conn.fetch(_HELD_SQL)}
    now = datetime.now(UTC)
    items = []
    for status in current:
        seen = traffic.get(status.system)
        done = settled.get(status.system)
        answered = (done["ok"] + done["failed"]) if done else 0
        items.append(Integration(
            **{f: getattr(status, f) for f in IntegrationStatus.__struct_fields__},
            heartbeat_age_s=(now - status.last_heartbeat_at).total_seconds()
            if status.last_heartbeat_at else None,
            events_per_min=seen.events_per_min if seen else 0.0,
            invalid_per_min=float(invalid.get(status.system, 0.0)),
            command_success_rate=done["ok"] / answered if done and answered else None,
            held_commands=held.get(status.system, 0),
            apply_latency_p50_ms=seen.p50 if seen else None,
            apply_latency_p99_ms=seen.p99 if seen else None, consumer_lag=consumer_lag,
        ))
    return items


class _Traffic(NamedTuple):
    events_per_min: float
    p50: float | None
    p99: float | None


async def _traffic(conn: asyncpg.Connection) -> dict[str, _Traffic]:
    """Each system's events per minute and apply latency over the last `RATE_WINDOW_MIN` minutes."""
    rows = await conn.fetch(_TRAFFIC_SQL)
    if not rows:
        return {}
    first, oldest_share = counted.window(rows[0]["now"])
    minutes: dict[str, list[tuple[list[int], float]]] = defaultdict(list)
    for r in rows:
        minutes[r["system"]].append((r["latency_ms"], oldest_share if r["minute"] == first else 1.0))
    figures = {}
    for system, counts in minutes.items():
        buckets = counted.summed(counts)
        figures[system] = _Traffic(sum(buckets) / RATE_WINDOW_MIN, counted.percentile(buckets, 0.5),
                                   counted.percentile(buckets, 0.99))
    return figures


async def forget_traffic(conn: asyncpg.Connection) -> None:
    """Minutes of traffic the figures no longer read (the figures round, every few seconds: a few rows)."""
    await conn.execute(f"DELETE FROM traffic_minutes WHERE minute < now() - interval '{2 * RATE_WINDOW_MIN}"
                       " minutes'")


def _with_floor(item: Integration, floor: dict[str, int] | None) -> Integration:
    return item if item.pace is None else msgspec.structs.replace(item,
                                                                  pace=msgspec.structs.replace(item.pace,
                                                                                                     floor=floor))


def seen_from(items: list[Integration], sites: list[str] | None) -> list[Integration]:
    """The items with each pace's floor narrowed to `sites` (None: every site): a manager of one site does
    not learn how many counters another site has open."""
    return [_with_floor(item, {site: n for site, n in (item.pace.floor or {}).items()
                               if sites is None or site in sites} if item.pace else None)
            for item in items]


def for_every_reader(items: list[Integration]) -> list[Integration]:
    """The items as the live topic carries them (to every reader, whatever their sites): without the floor."""
    return [_with_floor(item, None) for item in items]


async def snapshot(conn: asyncpg.Connection, _sites: list[str] | None) -> list[Integration]:
    """The live topic's snapshot (integrations belong to no site: every reader sees all but the per-site
    floor)."""
    return for_every_reader(await integrations(conn))


async def claim_figures(conn: asyncpg.Connection, changed: list[str], interval_s: float) -> list[str]:
    """The systems whose figures this replica publishes now: those whose status it just changed, and those
    not published for `interval_s` (claimed in one statement, so one replica per round)."""
    rows = await conn.fetch(
        "UPDATE integration_status SET figures_at = now() WHERE system = ANY($1::text[]) OR figures_at IS"
        " NULL OR figures_at < now() - make_interval(secs => $2) RETURNING system", changed, interval_s)
    return sorted(r["system"] for r in rows)


async def consumer_lag(js: JetStreamContext) -> int | None:
    """Messages the shared apply consumer has not been given yet."""
    try:
        async with asyncio.timeout(_LAG_TIMEOUT_S):
            info = await js.consumer_info(EVENTS_STREAM, APPLY_CONSUMER)
    except (nats.errors.Error, TimeoutError):
        return None
    return info.num_pending


async def record(conn: asyncpg.Connection, decided: list[Health], paces: dict[str, pacing.Pace]) -> list[str]:
    """Store the decisions; the systems whose status, reason or pace reason changed.

    Every replica decides; the rows are locked in one order and compared under the lock, so of several
    replicas deciding the same change only the first sees it as a change: it is published once.
    """
    if not decided:
        return []
    pace_reasons = [paces[h.system].reason if h.system in paces else None for h in decided]
    async with conn.transaction():
        inserted = await conn.fetch(
            "INSERT INTO integration_status (system, status, reason, pace_reason)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])"
            " ON CONFLICT (system) DO NOTHING RETURNING system",
            [h.system for h in decided], [h.status for h in decided], [h.reason for h in decided],
            pace_reasons)
        # a row locked by another replica is read here as that replica committed it
        stored = {r["system"]: (r["status"], r["reason"], r["pace_reason"]) for r in await conn.fetch(
            "SELECT system, status, reason, pace_reason FROM integration_status WHERE system ="
            " ANY($1::text[]) ORDER BY system FOR UPDATE", [h.system for h in decided])}
        changed = [(h, pace_reason) for h, pace_reason in zip(decided, pace_reasons, strict=True)
                   if stored.get(h.system) != (h.status, h.reason, pace_reason)]
        await conn.execute(
            "UPDATE integration_status i SET since = CASE WHEN i.status = n.status THEN i.since ELSE now()"
            " END, status = n.status, reason = n.reason, pace_reason = n.pace_reason, checked_at = now()"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS n(system, status, reason,"
            " pace_reason) WHERE i.system = n.system",
            [h.system for h, _ in changed], [h.status for h, _ in changed], [h.reason for h, _ in changed],
            [p for _, p in changed])
        await conn.execute("UPDATE integration_status SET checked_at = now() WHERE system = ANY($1::text[])",
                           sorted(stored.keys() - {h.system for h, _ in changed}))
    return sorted({r["system"] for r in inserted} | {h.system for h, _ in changed})
