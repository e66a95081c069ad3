"""Each site's settings as the backend configures them (`GET /api/v1/sites`), and times shown in the
site's own time zone: the board never shows a UTC string slice.

A backend without the endpoint, or a site it does not list, leaves UTC, and every time says its zone, so
a time is never read in the wrong one.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

import msgspec

from dashboard.backend_client import BackendClient, BackendError

SITES = "/api/v1/sites"


class SiteSettings(msgspec.Struct, frozen=True, kw_only=True):
    site: str
    time_zone: str = "UTC"
    wait_target_s: float | None = None
    service_targets_s: dict[str, float] = {}
    counters: list[str] = []


def _zone(name: str) -> tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC


@dataclass(frozen=True)
class SiteBook:
    """The sites a viewer may see, with their settings; `home` is the site of a viewer of one site, whose
    zone also shows times that belong to no site (a system's health, the connection)."""

    sites: dict[str, SiteSettings] = field(default_factory=dict)
    home: str | None = None

    def settings(self, site: str) -> SiteSettings:
        return self.sites.get(site) or SiteSettings(site=site)

    def wait_target_s(self, site: str, default_s: float) -> float:
        """The wait the site should stay under: its own (CONTRACT section 10), else the board's default."""
        own = self.settings(site).wait_target_s
        return default_s if own is None else own

    def zone(self, site: str | None) -> tzinfo:
        site = site or self.home
        return _zone(self.sites[site].time_zone) if site in self.sites else UTC

    def time(self, at: str | datetime | None, site: str | None = None, *, seconds: bool = True) -> str:
        """`at` as the site's wall-clock time with the zone's abbreviation, e.g. `14:05:09 CET`."""
        return self._format(at, site, "%H:%M:%S %Z" if seconds else "%H:%M %Z")

    def moment(self, at: str | datetime | None, site: str | None = None) -> str:
        """`at` with its date, for what may lie days back, e.g. `2026-12-04 14:05:09 CET`."""
        return self._format(at, site, "%Y-%m-%d %H:%M:%S %Z")

    def _format(self, at: str | datetime | None, site: str | None, pattern: str) -> str:
        if at is None:
            return "–"
        moment = datetime.fromisoformat(at) if isinstance(at, str) else at
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(self.zone(site)).strftime(pattern)


def site_book(items: list[dict[str, Any]], own_sites: tuple[str, ...] | None) -> SiteBook:
    sites = {item["site"]: msgspec.convert(item, SiteSettings) for item in items}
    return SiteBook(sites, own_sites[0] if own_sites is not None and len(own_sites) == 1 else None)


async def load_site_book(http: BackendClient, offered: bool, own_sites: tuple[str, ...] | None) -> SiteBook:
    """The viewer's sites from the backend, or an empty book (UTC) when it has no such endpoint or cannot
    be reached: times then say UTC."""
    if not offered:
        return site_book([], own_sites)
    try:
        body = await http.get(SITES)
    except BackendError:
        return site_book([], own_sites)
    return site_book(body["items"], own_sites)
