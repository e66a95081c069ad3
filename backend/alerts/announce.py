"""The one place alerts reach the live bus (topic `alerts`), sent once the change has committed."""

from __future__ import annotations

from backend.alerts.schemas import Alert
from backend.live.bus import ALL_SITES, Announcements


def announce_alert(announce: Announcements, alert: Alert) -> None:
    # an alert of no site (a system down) concerns every reader
    announce("alerts", alert.site or ALL_SITES, alert.id, alert)
