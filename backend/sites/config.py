"""Each site's settings, from a TOML file (`SWITCHBOARD_SITES_FILE`), read and checked once at start.

    [defaults]
    time_zone = "Europe/Amsterdam"
    wait_target_s = 600

    [sites.north]
    time_zone = "Europe/Amsterdam"
    wait_target_s = 900
    counters = ["1", "2", "3"]
    service_targets_s = { passport = 1200, tax = 600 }

A site the file does not name gets the defaults: every site a journey reaches has settings.
"""

from __future__ import annotations

import functools
import tomllib
import zoneinfo
from datetime import date, datetime, timedelta
from pathlib import Path

import msgspec

from switchboard.settings import load_section


class SitesSection(msgspec.Struct, frozen=True, kw_only=True):
    sites_file: str = ""
    # the wait a site should stay under when the file sets none (also the dashboard's fallback)
    wait_target_s: float = 600.0
    site_time_zone: str = "UTC"


class FloorSection(msgspec.Struct, frozen=True, kw_only=True):
    # how long a manual step's answer waits for its event to apply before saying `recorded`
    floor_apply_wait_s: float = 3.0


class SiteSettings(msgspec.Struct, frozen=True, kw_only=True):
    site: str
    time_zone: str = "UTC"
    wait_target_s: float = 600.0
    # per service (the queue's `service`): the wait that service should stay under, when it differs
    service_targets_s: dict[str, float] = {}
    counters: tuple[str, ...] = ()

    def target_for(self, service: str | None) -> float:
        if service is not None and service in self.service_targets_s:
            return self.service_targets_s[service]
        return self.wait_target_s

    def day_of(self, at: datetime) -> date:
        """The site's own date at `at`."""
        return at.astimezone(zoneinfo.ZoneInfo(self.time_zone)).date()

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """Midnight to midnight of `day` in the site's time zone (23 or 25 hours on a clock change)."""
        zone = zoneinfo.ZoneInfo(self.time_zone)
        return (datetime.combine(day, datetime.min.time(), zone),
                datetime.combine(day + timedelta(days=1), datetime.min.time(), zone))

    def today_began(self, now: datetime) -> datetime:
        return self.day_bounds(self.day_of(now))[0]


class _Defaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    time_zone: str | None = None
    wait_target_s: float | None = None
    service_targets_s: dict[str, float] = {}
    counters: tuple[str, ...] = ()


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    defaults: _Defaults = _Defaults()
    sites: dict[str, _Defaults] = {}


class SitesError(ValueError):
    """The sites file cannot be used; the message names the site and the problem."""


class SiteDirectory:
    def __init__(self, configured: dict[str, SiteSettings], default: SiteSettings) -> None:
        self._configured = configured
        self._default = default

    def get(self, site: str) -> SiteSettings:
        found = self._configured.get(site)
        return found if found is not None else msgspec.structs.replace(self._default, site=site)

    @property
    def default(self) -> SiteSettings:
        """What a site the file does not name gets."""
        return self._default

    @property
    def configured(self) -> list[str]:
        return sorted(self._configured)

    def latest_day(self, at: datetime, sites: list[str] | None) -> date:
        """The latest of the sites' own dates at `at` (None: every configured site's and a site's the file
        does not name): a range of days ending there holds each site's today, whatever its zone."""
        chosen = [self.get(name) for name in sites] if sites is not None \
            else [*map(self.get, self.configured), self._default]
        return max((settings.day_of(at) for settings in chosen), default=self._default.day_of(at))

    @functools.cached_property
    def targets_document(self) -> str:
        """Every site's wait targets as one JSON document, so that SQL can decide per journey whether its
        wait stayed within its service's target (backend/reports/targets.py reads it)."""
        def entry(settings: SiteSettings) -> dict[str, object]:
            return {"wait": settings.wait_target_s, "services": settings.service_targets_s}

        return msgspec.json.encode({"sites": {name: entry(self.get(name)) for name in self.configured},
                                    "default": entry(self.default)}).decode()


def _checked(site: str, entry: _Defaults, base: SiteSettings) -> SiteSettings:
    time_zone = entry.time_zone or base.time_zone
    try:
        zoneinfo.ZoneInfo(time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise SitesError(f"site {site!r}: unknown time zone {time_zone!r}") from exc
    target = entry.wait_target_s if entry.wait_target_s is not None else base.wait_target_s
    targets = {**base.service_targets_s, **entry.service_targets_s}
    if target <= 0 or any(t <= 0 for t in targets.values()):
        raise SitesError(f"site {site!r}: wait targets must be positive")
    return SiteSettings(site=site, time_zone=time_zone, wait_target_s=target, service_targets_s=targets,
                        counters=entry.counters or base.counters)


def parse_sites(text: str, section: SitesSection) -> SiteDirectory:
    try:
        document = msgspec.convert(tomllib.loads(text), _File)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise SitesError(f"sites file: {exc}") from exc
    base = SiteSettings(site="*", time_zone=section.site_time_zone, wait_target_s=section.wait_target_s)
    default = _checked("defaults", document.defaults, base)
    return SiteDirectory({name: _checked(name, entry, default) for name, entry in document.sites.items()},
                         default)


def load_sites(section: SitesSection | None = None) -> SiteDirectory:
    section = section or load_section(SitesSection)
    text = Path(section.sites_file).read_text(encoding="utf-8") if section.sites_file else ""
    return parse_sites(text, section)
