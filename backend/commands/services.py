"""Reading commands and their delivery state."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from backend.commands.schemas import CommandState

_FIELDS = tuple(f for f in CommandState.__struct_fields__ if f not in ("refs", "data"))


async def list_commands(conn: asyncpg.Connection, *, sites: list[str] | None, system: str | None,
                        status: str | None,
                        journey: UUID | None, limit: int,
                        cursor: int | None) -> tuple[list[CommandState], int | None]:
    """Newest first; the second value is the cursor for the next page."""
    args: list[Any] = [sites, system, status, journey, cursor, limit + 1]
    rows = await conn.fetch(
        """
        SELECT * FROM commands
        WHERE ($1::text[] IS NULL OR site = ANY($1)) AND ($2::text IS NULL OR system = $2)
          AND ($3::text IS NULL OR status = $3)
          AND ($4::uuid IS NULL OR journey_id = coalesce((SELECT new_id FROM journey_aliases WHERE old_id =
              $4), $4)
               OR journey_id IN (SELECT old_id FROM journey_aliases WHERE new_id = $4))
          AND ($5::bigint IS NULL OR seq < $5)
        ORDER BY seq DESC LIMIT $6
        """,
        *args,
    )
    items = [CommandState(**{f: r[f] for f in _FIELDS}, refs=list(r["refs"]),
                          data=msgspec.json.decode(r["data"]))
             for r in rows[:limit]]
    return items, (rows[limit - 1]["seq"] if len(rows) > limit else None)
