from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

CommandStatus = Literal["pending", "held", "sent", "ok", "failed"]


class CommandAttempt(msgspec.Struct, kw_only=True):
    """One publish of a command; `answer` None: none yet (the attempt in flight) or none in time."""

    attempt: int
    sent_at: datetime
    answer: Literal["ok", "failed", "unavailable"] | None
    error: str | None
    answered_at: datetime | None


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
    attempt_history: list[CommandAttempt] = []
    # `POST /api/v1/commands/<id>/resend` would send it again now
    resendable: bool = False


class CommandPage(msgspec.Struct):
    items: list[CommandState]
    next_cursor: str | None


class ResendRequest(msgspec.Struct, kw_only=True):
    reason: Annotated[str, Meta(max_length=500)] | None = None


class ResendResult(msgspec.Struct, kw_only=True):
    command_id: UUID
    status: CommandStatus
    # the open failure of a command that failed for good, now retrying
    failure_ids: list[int]
