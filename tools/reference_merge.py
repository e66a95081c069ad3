"""An independent, deliberately plain statement of CONTRACT section 2's merge, for tests and chaos runs.

It looks at the whole set of a journey's distinct events at once (no incremental state), so it
shares no logic with `backend.journeys.merge`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

FORWARD = ["booked", "arrived", "waiting", "called", "in_service", "completed"]
FINAL = {"completed", "cancelled", "no_show"}
STAGE_OF = {"appointment.booked": "booked", "customer.arrived": "arrived", "ticket.issued": "waiting",
            "ticket.called": "called", "service.started": "in_service", "service.completed": "completed",
            "appointment.cancelled": "cancelled", "appointment.no_show": "no_show"}


def _order(event: dict[str, Any]) -> tuple[datetime, str, str]:
    return datetime.fromisoformat(event["time"]), event["source"], event["id"]


def _latest(events: list[dict[str, Any]], types: set[str]) -> dict[str, Any] | None:
    matching = [e for e in events if e["type"] in types]
    return max(matching, key=_order) if matching else None


def _unscoped(event: dict[str, Any]) -> str | None:
    return None


def expected_journey(events: list[dict[str, Any]],
                     scope_of: Callable[[dict[str, Any]], str | None] = _unscoped) -> dict[str, Any]:
    """`scope_of` names the one site an event was published for (by a connector limited to sites), if any."""

    def authority(event: dict[str, Any]) -> str:
        system = event["source"].split("/")[1]
        system = event["subject"].split(":", 1)[0] if system == "switchboard" else system
        scope = scope_of(event)
        return system if scope is None else f"{system}@{scope}"

    # the site: the latest one said by the authority of the earliest event, which owns it
    owner = authority(min(events, key=_order))
    site = max((e for e in events if authority(e) == owner), key=_order)["data"]["site"]
    # an event published for one site says nothing of a journey that sits at another
    events = [e for e in events if scope_of(e) in (None, site)]
    staged = [e for e in events if e["type"] in STAGE_OF]
    finals = [e for e in staged if STAGE_OF[e["type"]] in FINAL]
    if finals:
        stage = STAGE_OF[max(finals, key=_order)["type"]]
    elif staged:
        stage = max((STAGE_OF[e["type"]] for e in staged), key=FORWARD.index)
    else:
        stage = "open"
    booked = _latest(events, {"appointment.booked"})
    slot = _latest(events, {"appointment.booked", "appointment.rescheduled"})
    priority = _latest(events, {"customer.priority_changed"})
    eligibility = _latest(events, {"eligibility.checked"})
    counter = _latest(events, {"ticket.called", "service.started"})
    ticket = _latest(events, {"ticket.issued"})
    return {
        "site": site,
        "stage": stage,
        "service": booked["data"]["service"] if booked else None,
        "slot_start": datetime.fromisoformat(slot["data"]["slot_start"]) if slot else None,
        "priority": priority["data"]["priority"] if priority else "normal",
        "eligibility": eligibility["data"]["result"] if eligibility else None,
        "counter": counter["data"]["counter"] if counter else None,
        "ticket": ticket["data"]["ticket"] if ticket else None,
    }


def observed(journey: Any) -> dict[str, Any]:
    return {key: getattr(journey, key) for key in ("site", "stage", "service", "slot_start", "priority",
                                                    "eligibility", "counter", "ticket")}
