"""The dashboard's settings: its own section, single sign-on's, and the kernel's token section (demo mode
mints tokens)."""

from __future__ import annotations

import msgspec

from dashboard.oidc import OidcSection
from switchboard.settings import TokenSection, load_settings


class DashboardSection(msgspec.Struct, frozen=True, kw_only=True):
    # where the backend answers (also what `switchboard sim` and connector profiles point at)
    backend_url: str = "http://127.0.0.1:8000"
    # demo mode lets anyone pick a role and site (it mints the token); never in production
    dashboard_demo: bool = False
    # the wait (seconds) a site should stay under where the backend's site settings name none; the same
    # `SWITCHBOARD_WAIT_TARGET_S` the backend's sites section defaults to
    wait_target_s: float = 600.0
    # a sign-in with no tab open this long is forgotten (its tokens no longer refreshed): a browser closed
    # without signing out leaves no credential behind in this process, nor a cookie that still works
    session_idle_s: float = 8 * 3600.0


class DashboardSettings(msgspec.Struct, frozen=True, kw_only=True):
    dashboard: DashboardSection = msgspec.field(default_factory=DashboardSection)
    tokens: TokenSection = msgspec.field(default_factory=TokenSection)
    oidc: OidcSection = msgspec.field(default_factory=OidcSection)

    @classmethod
    def from_env(cls) -> DashboardSettings:
        """This process's settings, every section read once."""
        return load_settings(cls)
