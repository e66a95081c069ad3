"""Backend processes for tests: the session's configuration, and stacks of a test's own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from backend.settings import BackendSettings
from switchboard import bus
from tests.support.settings import backend_settings
from tools.backend_process import BackendProcess
from tools.bench.common import scratch_database
from tools.embedded import EmbeddedNats

JWT_SECRET = "fake-jwt-secret-for-tests-only-never-deployed"


LAB_SYSTEMS = ("lab_health", "lab_degraded", "lab_traffic", "lab_pace", "lab_floor", "lab_board", "lab_scope",
               "lab_rogue", "lab_clock")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def nats_connect(settings: BackendSettings, name: str = "test") -> NATS:
    """A harness connection to the session's NATS, with the backend's credentials when it wants them."""
    return await bus.connect(settings.bus.nats_url or "", name, creds=settings.bus.nats_creds)


def backend_env(settings: BackendSettings) -> dict[str, str]:
    return {
        **os.environ, "SWITCHBOARD_DATABASE_URL": settings.database.database_url or "",
        # the runtime role only: the session's database is migrated already
        "SWITCHBOARD_DATABASE_OWNER_URL": "",
        "SWITCHBOARD_NATS_URL": settings.bus.nats_url or "",
        "SWITCHBOARD_NATS_CREDS": settings.bus.nats_creds or "",
        "SWITCHBOARD_JWT_SECRET": JWT_SECRET,
        "SWITCHBOARD_DATA_DIR": str(settings.tokens.data_dir), "SWITCHBOARD_LOG_LEVEL": "WARNING",
        # command delivery in seconds, not minutes, so that retries and timeouts are testable
        "SWITCHBOARD_COMMAND_RELAY_INTERVAL_S": "0.1", "SWITCHBOARD_COMMAND_ANSWER_TIMEOUT_S": "4",
        "SWITCHBOARD_COMMAND_BACKOFF_S": "0.2", "SWITCHBOARD_COMMAND_BACKOFF_MAX_S": "0.5",
        "SWITCHBOARD_COMMAND_MAX_ATTEMPTS": "3", "SWITCHBOARD_RETRY_DEBOUNCE_S": "1",
        # systems of their own for the integration tests, whose health no other test touches
        "SWITCHBOARD_EXTRA_SYSTEMS": ",".join(LAB_SYSTEMS), "SWITCHBOARD_INTEGRATION_CHECK_INTERVAL_S": "0.5",
        # figures once a minute only: a test of "published once" must not see a figures round
        "SWITCHBOARD_INTEGRATION_FIGURES_INTERVAL_S": "60",
        # alert rules evaluated every second, so that a banner shows within the suite's waits
        "SWITCHBOARD_ALERT_CHECK_INTERVAL_S": "1",
    }


def start_backend(settings: BackendSettings, log_path: Path,
                  extra_env: dict[str, str] | None = None) -> BackendProcess:
    return BackendProcess({**backend_env(settings), **(extra_env or {})}, log_path).start().wait_ready()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stack:
    """Backend replicas on a NATS and a database nobody else uses, with a harness connection to each."""

    settings: BackendSettings
    backends: list[BackendProcess]
    pool: asyncpg.Pool
    nc: NATS
    nats_server: EmbeddedNats

    @property
    def backend(self) -> BackendProcess:
        return self.backends[0]

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()


@contextlib.asynccontextmanager
async def own_stack(server_url: str, folder: Path, extra_env: dict[str, str] | None = None,
                    replicas: int = 1) -> AsyncIterator[Stack]:
    """A test's own world: no other test's traffic shares its streams, its command pace or its heartbeats.
    `server_url` is the Postgres server the scratch database goes on; the replicas start one after the other
    (the first one migrates)."""
    label = uuid.uuid4().hex[:8]
    ns = EmbeddedNats(folder / f"nats-{label}")
    ns.start()
    try:
        async with scratch_database(server_url, "test") as database_url:
            settings = backend_settings(database_url=database_url, nats_url=ns.url, jwt_secret=JWT_SECRET,
                                data_dir=str(folder / f"data-{label}"), nats_creds=ns.creds)
            backends: list[BackendProcess] = []
            try:
                for n in range(replicas):
                    backends.append(await asyncio.to_thread(
                        start_backend, settings, folder / f"backend-{label}-{n}.log", extra_env))
                pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
                nc = await nats_connect(settings)
                try:
                    yield Stack(settings=settings, backends=backends, pool=pool, nc=nc, nats_server=ns)
                finally:
                    await nc.close()
                    await pool.close()
            finally:
                for process in backends:
                    process.stop()
    finally:
        ns.stop()
