"""The command message Switchboard publishes on `svc.commands.<system>.<command>` (CONTRACT section 3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec


class Command(msgspec.Struct, kw_only=True):
    id: UUID
    system: str
    command: str
    journey_id: UUID
    refs: list[str]
    site: str
    data: dict[str, Any]
    attempt: int
    created_at: datetime


def command_subject(system: str, command: str) -> str:
    return f"svc.commands.{system}.{command}"
