"""Reading reconciliation state from Postgres: journeys by reference, runs, drift items, status per system."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from backend.journeys.merge import JourneyState
from backend.reconciliation.compare import Holding
from backend.reconciliation.ownership import owned
from backend.reconciliation.plans import proposed_action
from backend.reconciliation.schemas import DriftItem, Run, SystemStatus

_state = msgspec.json.Decoder(JourneyState)
_HOLDING = ("j.id, j.site, j.stage, j.state, j.updated_at,"
            " array(SELECT o.ref FROM journey_refs o WHERE o.journey_id = j.id ORDER BY o.ref) AS refs")


def _holding(row: asyncpg.Record) -> Holding:
    return Holding(id=row["id"], site=row["site"], stage=row["stage"], state=_state.decode(row["state"]),
                   updated_at=row["updated_at"], refs=list(row["refs"]))


async def holdings_by_ref(conn: asyncpg.Connection, refs: Iterable[str]) -> dict[str, Holding]:
    rows = await conn.fetch(f"SELECT r.ref, {_HOLDING} FROM journey_refs r JOIN journeys j ON j.id ="
                            " r.journey_id WHERE r.ref = ANY($1::text[])", sorted(set(refs)))
    return {r["ref"]: _holding(r) for r in rows}


async def held_elsewhere(conn: asyncpg.Connection, refs: Iterable[str], site: str) -> set[str]:
    """Those of `refs` held by journeys of another site than `site`."""
    rows = await conn.fetch("SELECT r.ref FROM journey_refs r JOIN journeys j ON j.id = r.journey_id"
                            " WHERE r.ref = ANY($1::text[]) AND j.site <> $2", sorted(set(refs)), site)
    return {r["ref"] for r in rows}


async def refs_held_on(conn: asyncpg.Connection, system: str, site: str, day: date) -> list[str]:
    """The system's references held by journeys of a site that began on `day` (UTC)."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = await conn.fetch(
        "SELECT r.ref FROM journeys j JOIN journey_refs r ON r.journey_id = j.id"
        " WHERE j.site = $1 AND j.created_at >= $2 AND j.created_at < $3 AND r.ref LIKE $4 ORDER BY r.ref",
        site, start, start + timedelta(days=1), f"{system}:%")
    return [r["ref"] for r in rows]


async def setters(conn: asyncpg.Connection, system: str,
                  holdings: Iterable[Holding]) -> dict[tuple[UUID, str], str]:
    """For journeys holding several of the system's references: which reference's event set each owned
    field."""
    wanted: dict[tuple[str, str], list[tuple[UUID, str]]] = {}
    for journey in holdings:
        if sum(r.startswith(f"{system}:") for r in journey.refs) < 2:
            continue
        for field in owned(system).fields:
            stamped = getattr(journey.state, field, None)
            if stamped is not None:
                _, source, event_id = stamped.key.split("|", 2)
                wanted.setdefault((source, event_id), []).append((journey.id, field))
    if not wanted:
        return {}
    sources, ids = zip(*wanted, strict=True)
    rows = await conn.fetch("SELECT e.source, e.id, e.subject FROM events e JOIN unnest($1::text[],"
                            " $2::text[])"
                            " AS k(source, id) ON e.source = k.source AND e.id = k.id", list(sources),
                            list(ids))
    return {at: r["subject"] for r in rows for at in wanted[(r["source"], r["id"])]}


def to_run(row: asyncpg.Record) -> Run:
    finished = row["finished_at"]
    return Run(id=row["id"], system=row["system"], site=row["site"], day=row["day"], trigger=row["trigger"],
               requested_by=row["requested_by"], status=row["status"], started_at=row["started_at"],
               finished_at=finished,
               duration_s=round((finished - row["started_at"]).total_seconds(), 3) if finished else None,
               checked=row["checked"], drifted=row["drifted"], error=row["error"])


async def get_run(conn: asyncpg.Connection, run_id: int) -> Run | None:
    row = await conn.fetchrow("SELECT * FROM reconciliation_runs WHERE id = $1", run_id)
    return to_run(row) if row else None


def _json(value: Any) -> Any:
    return None if value is None else msgspec.json.decode(value)


def to_drift(row: asyncpg.Record) -> DriftItem:
    return DriftItem(
        id=row["id"], run_id=row["run_id"], system=row["system"], site=row["site"], ref=row["ref"],
        journey_id=row["journey_id"], kind=row["kind"], field=row["field"], ours=_json(row["ours"]),
        theirs=_json(row["theirs"]), theirs_updated_at=row["theirs_updated_at"],
        fallback_id=row["fallback_id"],
        conflict=row["conflict"], status=row["status"], proposed_action=proposed_action(row),
        action=row["action"], reason=row["reason"], acted_by=row["acted_by"], command_id=row["command_id"],
        last_check=_json(row["last_check"]), detected_at=row["detected_at"], updated_at=row["updated_at"],
        resolved_at=row["resolved_at"])


def drift_filters(args: list[Any], *, sites: list[str] | None, status: str | None, system: str | None,
                  kind: str | None) -> list[str]:
    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    where = []
    if sites is not None:
        where.append(f"d.site = ANY({arg(sites)}::text[])")
    for column, value in (("status", status), ("system", system), ("kind", kind)):
        if value is not None:
            where.append(f"d.{column} = {arg(value)}")
    return where


async def list_drift(conn: asyncpg.Connection, *, sites: list[str] | None, status: str | None,
                     system: str | None, kind: str | None, limit: int, before: int | None) -> list[DriftItem]:
    """Newest first; `before` is the last id of the previous page."""
    args: list[Any] = []
    where = drift_filters(args, sites=sites, status=status, system=system, kind=kind)
    if before is not None:
        args.append(before)
        where.append(f"d.id < ${len(args)}")
    args.append(limit)
    rows = await conn.fetch(f"SELECT d.* FROM drift_items d {'WHERE ' + ' AND '.join(where) if where else ''}"
                            f" ORDER BY d.id DESC LIMIT ${len(args)}", *args)
    return [to_drift(r) for r in rows]


async def get_drift(conn: asyncpg.Connection, ids: Sequence[int]) -> list[DriftItem]:
    rows = await conn.fetch("SELECT * FROM drift_items WHERE id = ANY($1::bigint[]) ORDER BY id", list(ids))
    return [to_drift(r) for r in rows]


async def statuses(conn: asyncpg.Connection, *, sites: list[str] | None, system: str | None = None,
                   ) -> list[SystemStatus]:
    """Per system and site: the last run and the open drift count.

    Every live reconciliation snapshot asks this, so it reads one run per pair, not every run kept: the
    pairs by a skip scan of `reconciliation_runs_latest`, then each pair's latest run from the same index."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE pairs AS (
            (SELECT system, site FROM reconciliation_runs
             WHERE ($1::text[] IS NULL OR site = ANY($1::text[])) AND ($2::text IS NULL OR system = $2)
             ORDER BY system, site LIMIT 1)
            UNION ALL
            SELECT next.system, next.site FROM pairs p CROSS JOIN LATERAL (
                SELECT system, site FROM reconciliation_runs
                WHERE (system, site) > (p.system, p.site)
                  AND ($1::text[] IS NULL OR site = ANY($1::text[])) AND ($2::text IS NULL OR system = $2)
                ORDER BY system, site LIMIT 1) next
        )
        SELECT r.*,
               (SELECT count(*) FROM drift_items d WHERE d.system = r.system AND d.site = r.site
                  AND d.status IN ('open', 'repairing')) AS open_drift
        FROM pairs p CROSS JOIN LATERAL (
            SELECT * FROM reconciliation_runs r WHERE r.system = p.system AND r.site = p.site
            ORDER BY r.started_at DESC, r.id DESC LIMIT 1) r
        ORDER BY r.system, r.site
        """, sites, system)
    return [SystemStatus(system=r["system"], site=r["site"], reachable=r["status"] != "unreachable",
                         last_run=to_run(r), open_drift=r["open_drift"]) for r in rows]
