from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class Failure(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    status: str
    system: str | None
    site: str | None
    event_source: str | None
    event_id: str | None
    event_type: str | None
    command_id: str | None
    reason: str
    attempts: int
    first_at: datetime
    last_at: datetime
    acted_by: str | None
    payload: Any


class FailurePage(msgspec.Struct):
    items: list[Failure]
    next_cursor: str | None
