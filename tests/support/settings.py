"""Settings for tests: the defaults with the fields a test names, each in the section declaring it."""

from __future__ import annotations

from collections import defaultdict
from typing import TypeVar

import msgspec

from backend.settings import BackendSettings
from dashboard.settings import DashboardSettings
from switchboard.settings import TokenSection, sections_of

SettingsT = TypeVar("SettingsT", bound=msgspec.Struct)


def settings_with(settings: type[SettingsT], **fields: object) -> SettingsT:
    """`settings` of the defaults (never the environment) with `fields` set; a name no section declares
    fails, so a test cannot set what nothing reads."""
    sections = sections_of(settings)
    owners = {field.name: name for name, section in sections.items()
              for field in msgspec.structs.fields(section)}
    unknown = sorted(set(fields) - set(owners))
    if unknown:
        raise TypeError(f"no section of {settings.__name__} declares {', '.join(unknown)}")
    grouped: dict[str, dict[str, object]] = defaultdict(dict)
    for name, value in fields.items():
        grouped[owners[name]][name] = value
    return settings(**{name: section(**grouped[name]) for name, section in sections.items()})


def backend_settings(**fields: object) -> BackendSettings:
    """E.g. `backend_settings(database_url=..., jwt_secret=..., retention_events_days=1)`."""
    return settings_with(BackendSettings, **fields)


def dashboard_settings(tokens: TokenSection, **fields: object) -> DashboardSettings:
    """A dashboard minting with `tokens` (the backend's under test), e.g. `backend_url=backend.url`."""
    return msgspec.structs.replace(settings_with(DashboardSettings, **fields), tokens=tokens)
