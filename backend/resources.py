"""What the handlers share for the life of the app: settings, the routing rules, the Postgres pool, NATS,
the live bus."""

from __future__ import annotations

import msgspec
from asyncpg import Pool
from litestar.di import NamedDependency
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from backend.live.bus import LiveBus
from backend.routing.rules import RuleSet
from backend.settings import BackendSettings
from backend.sites.config import SiteDirectory
from switchboard.events import RESERVED_SYSTEMS, SEED_SYSTEMS


class Resources(msgspec.Struct, kw_only=True):
    settings: BackendSettings  # every section, read once at start
    rules: RuleSet  # loaded and checked once at start; apply and retry route by the same set
    pool: Pool
    nc: NATS
    js: JetStreamContext
    sites: SiteDirectory  # each site's settings, read and checked once at start
    live: LiveBus  # the one way a change reaches live clients, on every replica

    @property
    def known_systems(self) -> frozenset[str]:
        return SEED_SYSTEMS | RESERVED_SYSTEMS | frozenset(self.settings.ingest.extra_systems)


# How handlers ask for them: `resources: AppResources` (an explicit named dependency).
AppResources = NamedDependency[Resources]
