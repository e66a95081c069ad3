"""The one place alerts reach the live bus (topic `alerts`), always after the change committed."""

from __future__ import annotations

from backend.alerts.schemas import Alert
from backend.live import publish
from backend.live.bus import ALL_SITES


async def announce(alert: Alert) -> None:
    # an alert of no site (a system down) concerns every reader
    await publish("alerts", alert.site or ALL_SITES, alert.id, alert)
