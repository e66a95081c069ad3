"""A journey as the API and the live feed show it, made from its stored state: one shape whether it was read
from Postgres or comes straight from the batch that changed it."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from backend.journeys.merge import JourneyState
from backend.journeys.schemas import Interaction, Journey


def journey_view(state: JourneyState, *, id: UUID, site: str, stage: str,  # noqa: A002 - the column's name
                 refs: list[str], created_at: datetime, updated_at: datetime, cls: type[Journey] = Journey,
                 **extra: Any) -> Journey:
    eligibility = state.value("eligibility") or {}
    ticket = state.value("ticket") or {}
    interaction = state.value("last_interaction")
    slot = state.value("slot_start")
    return cls(
        id=id, site=site, stage=stage, refs=refs,  # type: ignore[arg-type]
        service=state.value("service"), slot_start=datetime.fromisoformat(slot) if slot else None,
        priority=state.value("priority") or "normal", eligibility=eligibility.get("result"),
        eligibility_reason=eligibility.get("reason_code"),
        last_interaction=msgspec.convert(interaction, Interaction) if interaction else None,
        counter=state.value("counter"), ticket=ticket.get("ticket"), queue_name=ticket.get("queue_name"),
        channel=state.value("channel"), outcome=state.value("outcome"),
        created_at=created_at, updated_at=updated_at, **extra,
    )
