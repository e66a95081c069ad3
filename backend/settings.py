"""The backend's settings: the kernel's sections it shares with other processes and each domain's own,
gathered once (`BackendSettings.from_env()`) for the app factory, which hands them on in `Resources`.

A domain's section lives beside its code (`backend/<package>/config.py`, or the module that uses it); add a
field there and, for a new section, one line here. Environment names stay `SWITCHBOARD_<FIELD>`.
"""

from __future__ import annotations

import msgspec

from backend.alerts.settings import AlertsSection
from backend.auth import AuthSection
from backend.commands.config import CommandsSection
from backend.failures.config import FailuresSection
from backend.fallbacks.config import FallbacksSection
from backend.ingest.config import IngestSection
from backend.integrations.config import IntegrationsSection
from backend.live.config import LiveSection
from backend.messaging import StreamsSection
from backend.rate_limits import RateLimitSection
from backend.reconciliation.config import ReconciliationSection
from backend.reports.settings import ReportsSection
from backend.retention.config import RetentionSection
from backend.routing.config import RoutingSection
from backend.sites.config import FloorSection, SitesSection
from backend.system.config import SystemSection
from backend.webhooks.config import WebhooksSection
from switchboard.settings import BusSection, DatabaseSection, TokenSection, load_settings


class BackendSettings(msgspec.Struct, frozen=True, kw_only=True):
    database: DatabaseSection = msgspec.field(default_factory=DatabaseSection)
    bus: BusSection = msgspec.field(default_factory=BusSection)
    streams: StreamsSection = msgspec.field(default_factory=StreamsSection)
    tokens: TokenSection = msgspec.field(default_factory=TokenSection)
    auth: AuthSection = msgspec.field(default_factory=AuthSection)
    rate_limits: RateLimitSection = msgspec.field(default_factory=RateLimitSection)
    ingest: IngestSection = msgspec.field(default_factory=IngestSection)
    webhooks: WebhooksSection = msgspec.field(default_factory=WebhooksSection)
    live: LiveSection = msgspec.field(default_factory=LiveSection)
    routing: RoutingSection = msgspec.field(default_factory=RoutingSection)
    commands: CommandsSection = msgspec.field(default_factory=CommandsSection)
    integrations: IntegrationsSection = msgspec.field(default_factory=IntegrationsSection)
    fallbacks: FallbacksSection = msgspec.field(default_factory=FallbacksSection)
    failures: FailuresSection = msgspec.field(default_factory=FailuresSection)
    reconciliation: ReconciliationSection = msgspec.field(default_factory=ReconciliationSection)
    retention: RetentionSection = msgspec.field(default_factory=RetentionSection)
    sites: SitesSection = msgspec.field(default_factory=SitesSection)
    floor: FloorSection = msgspec.field(default_factory=FloorSection)
    alerts: AlertsSection = msgspec.field(default_factory=AlertsSection)
    reports: ReportsSection = msgspec.field(default_factory=ReportsSection)
    system: SystemSection = msgspec.field(default_factory=SystemSection)

    @classmethod
    def from_env(cls) -> BackendSettings:
        """This process's settings, every section read once."""
        return load_settings(cls)

