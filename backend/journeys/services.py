"""Reading journeys: keyset-paged lists and one journey with its timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from backend.journeys.merge import JourneyState
from backend.journeys.schemas import Interaction, Journey, JourneyDetail, JourneyPage, TimelineEntry
from backend.paging import decode_cursor, encode_cursor

_state = msgspec.json.Decoder(JourneyState)
_COLUMNS = ("j.id, j.site, j.stage, j.state, j.created_at, j.updated_at,"
            " array(SELECT r.ref FROM journey_refs r WHERE r.journey_id = j.id ORDER BY r.ref) AS refs")


def to_journey(row: asyncpg.Record, cls: type[Journey] = Journey, **extra: Any) -> Journey:
    state = _state.decode(row["state"])
    eligibility = state.value("eligibility") or {}
    ticket = state.value("ticket") or {}
    interaction = state.value("last_interaction")
    slot = state.value("slot_start")
    return cls(
        id=row["id"], site=row["site"], stage=row["stage"], refs=list(row["refs"]),
        service=state.value("service"), slot_start=datetime.fromisoformat(slot) if slot else None,
        priority=state.value("priority") or "normal", eligibility=eligibility.get("result"),
        eligibility_reason=eligibility.get("reason_code"),
        last_interaction=msgspec.convert(interaction, Interaction) if interaction else None,
        counter=state.value("counter"), ticket=ticket.get("ticket"), queue_name=ticket.get("queue_name"),
        channel=state.value("channel"), outcome=state.value("outcome"),
        created_at=row["created_at"], updated_at=row["updated_at"], **extra,
    )


async def list_journeys(conn: asyncpg.Connection, *, sites: list[str] | None, stage: str | None,
                        ref: str | None, limit: int, cursor: str | None) -> JourneyPage:
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if sites is not None:
        where.append(f"j.site = ANY({arg(sites)}::text[])")
    if stage:
        where.append(f"j.stage = {arg(stage)}")
    if ref:
        where.append(f"j.id = (SELECT journey_id FROM journey_refs WHERE ref = {arg(ref)})")
    if cursor:
        created_at, last_id = decode_cursor(cursor, datetime, UUID)
        where.append(f"(j.created_at, j.id) < ({arg(created_at)}, {arg(last_id)})")
    sql = (f"SELECT {_COLUMNS} FROM journeys j {'WHERE ' + ' AND '.join(where) if where else ''}"
           f" ORDER BY j.created_at DESC, j.id DESC LIMIT {arg(limit + 1)}")
    rows = await conn.fetch(sql, *args)
    items = [to_journey(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return JourneyPage(items=items, next_cursor=next_cursor)


async def get_journey(conn: asyncpg.Connection, journey_id: UUID) -> JourneyDetail | None:
    """One journey; an id that a merge absorbed answers with the journey it merged into."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM journeys j WHERE j.id = coalesce("
        " (SELECT new_id FROM journey_aliases WHERE old_id = $1), $1)", journey_id)
    if row is None:
        return None
    timeline = await conn.fetch(
        "SELECT source, id, type, time, applied_at FROM events WHERE journey_id = $1 ORDER BY time, source,"
        " id",
        row["id"])
    return to_journey(row, JourneyDetail, timeline=[TimelineEntry(**dict(t)) for t in timeline])  # type: ignore[return-value]


async def get_journeys(conn: asyncpg.Connection, journey_ids: list[UUID]) -> list[Journey]:
    """The journeys with these ids (those a merge absorbed are gone)."""
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM journeys j WHERE j.id = ANY($1::uuid[])", journey_ids)
    return [to_journey(r) for r in rows]
