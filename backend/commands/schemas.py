from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

CommandStatus = Literal["pending", "held", "sent", "ok", "failed"]


class CommandState(msgspec.Struct, kw_only=True):
    """A command and its delivery: the message fields plus where it stands."""

    id: UUID
    system: str
    command: str
    rule: str
    journey_id: UUID
    refs: list[str]
    site: str
    data: dict[str, Any]
    status: CommandStatus
    attempts: int
    last_error: str | None
    next_at: datetime
    sent_at: datetime | None
    created_at: datetime
    updated_at: datetime


class CommandPage(msgspec.Struct):
    items: list[CommandState]
    next_cursor: str | None
