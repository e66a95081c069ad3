from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

from backend.commands.schemas import CommandState
from backend.failures.schemas import Failure
from backend.reconciliation.schemas import DriftItem

Stage = Literal["open", "booked", "arrived", "waiting", "called", "in_service", "completed", "cancelled",
                "no_show"]


class Interaction(msgspec.Struct):
    channel: str
    reason_code: str
    outcome: str
    time: datetime


class JourneyMerged(msgspec.Struct, kw_only=True):
    """A journey a link joined into another, on the live `journeys` topic: it is gone, and its references
    and events are the survivor's now (whose own update is sent too)."""

    id: UUID
    site: str  # where it was shown, so that the clients that showed it hear of it
    merged_into: UUID


class Journey(msgspec.Struct, kw_only=True):
    id: UUID
    site: str
    stage: Stage
    refs: list[str]
    service: str | None
    slot_start: datetime | None
    priority: Literal["normal", "high"]
    eligibility: Literal["passed", "failed", "unverified"] | None
    eligibility_reason: str | None
    last_interaction: Interaction | None
    counter: str | None
    ticket: str | None
    queue_name: str | None
    channel: str | None
    outcome: str | None
    created_at: datetime
    updated_at: datetime


class TimelineEntry(msgspec.Struct):
    source: str
    id: str
    type: str
    time: datetime
    applied_at: datetime
    # the one site its sender spoke for (a connector limited to sites): it counts only while the journey
    # sits there
    scope: str | None = None


class JourneyDetail(Journey, kw_only=True):
    timeline: list[TimelineEntry]  # its newest 1,000 events at most, oldest first
    earlier_events: bool = False  # older events than the timeline's first are left out
    # what Switchboard sent for it, what went wrong with it and where the systems disagree about it
    commands: list[CommandState] = []
    failures: list[Failure] = []
    drift: list[DriftItem] = []


class JourneyPage(msgspec.Struct):
    items: list[Journey]
    next_cursor: str | None
