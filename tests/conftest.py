"""Real servers for every test: the ones named by SWITCHBOARD_DATABASE_URL / SWITCHBOARD_NATS_URL,
or embedded ones started for the session when those are unset.

With external servers each session gets a database of its own and fresh streams. Tests keep out
of each other's way by using their own references and sites (`uid`), never by truncating.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest

from backend import db, messaging
from backend.settings import BackendSettings
from switchboard import bus
from switchboard.events import SEED_SYSTEMS
from switchboard.tokens import mint_token
from tests.support.backends import (
    JWT_SECRET,
    LAB_SYSTEMS,
    Stack,
    nats_connect,
    own_stack,
    start_backend,
    with_database,
)
from tests.support.settings import backend_settings
from tests.support.webhook_receiver import ALERT_RULES, ALERT_SECRET, Receiver, webhook_receiver
from tools.backend_process import BackendProcess
from tools.embedded import embedded_servers


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """The session's own folder for servers, logs and data. Not pytest's numbered tmp folders: other
    pytest runs on the machine prune those, which would delete a running server's data under it."""
    with tempfile.TemporaryDirectory(prefix="switchboard-tests-") as folder:
        yield Path(folder)


@pytest.fixture(scope="session")
def server_urls(workdir: Path) -> Iterator[dict[str, str]]:
    database_url = os.environ.get("SWITCHBOARD_DATABASE_URL")
    nats_url = os.environ.get("SWITCHBOARD_NATS_URL")
    """The servers' URLs, and with an embedded (authenticated) NATS its backend credentials ("nats_creds")
    and issuer folder ("nats_issuer"). A configured NATS is used as it is, without credentials."""
    if database_url and nats_url:
        yield {"database_url": database_url, "nats_url": nats_url}
        return
    with embedded_servers(workdir / "servers", postgres=not database_url, nats=not nats_url) as urls:
        yield {**urls, "database_url": database_url or urls["database_url"],
               "nats_url": nats_url or urls["nats_url"]}


@pytest.fixture(scope="session")
async def settings(server_urls: dict[str, str], workdir: Path) -> AsyncIterator[BackendSettings]:
    """A database of this session's own, migrated by its owner, and streams recreated from scratch.
    The backend gets the runtime role's URL: the whole suite runs it without the owner's rights."""
    name = f"switchboard_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_urls["database_url"])
    await admin.execute(f'CREATE DATABASE "{name}"')
    await db.ensure_runtime_role(admin)
    owner_url = with_database(server_urls["database_url"], name)
    conn = await asyncpg.connect(owner_url)
    await db.migrate(conn, runtime_role=db.RUNTIME_ROLE)
    await conn.close()

    nc = await bus.connect(server_urls["nats_url"], "test-setup", creds=server_urls.get("nats_creds"))
    js = nc.jetstream()
    await messaging.recreate_streams(js, systems=SEED_SYSTEMS | set(LAB_SYSTEMS))
    await nc.close()

    yield backend_settings(database_url=db.with_role(owner_url, db.RUNTIME_ROLE),
                           database_owner_url=owner_url, nats_url=server_urls["nats_url"],
                           nats_creds=server_urls.get("nats_creds"), jwt_secret=JWT_SECRET,
                           data_dir=str(workdir / "data"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
async def pool(settings: BackendSettings) -> AsyncIterator[asyncpg.Pool]:
    """The operator's view, the owner's: it may set up what the backend may not (triggers, backdating)."""
    pool = await db.create_pool(settings.database.database_owner_url)  # type: ignore[arg-type]
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def js(settings: BackendSettings) -> AsyncIterator[nats.js.JetStreamContext]:
    nc = await nats_connect(settings)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture(scope="session")
def backend(settings: BackendSettings, workdir: Path) -> Iterator[BackendProcess]:
    process = start_backend(settings, workdir / "backend.log")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def token(settings: BackendSettings) -> Callable[..., str]:
    def make(role: str | list[str], sites: list[str] | str = "*", system: str | None = None,
             ttl: timedelta = timedelta(hours=1)) -> str:
        roles = [role] if isinstance(role, str) else role
        return mint_token(settings.tokens, sub=f"test-{'-'.join(roles)}", roles=roles, sites=sites,
                          system=system, ttl=ttl)

    return make


@pytest.fixture
async def api(backend: BackendProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=backend.url, timeout=10) as client:
        yield client


@pytest.fixture
def uid() -> str:
    """A short unique suffix for this test's references and sites."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def second_backend(settings: BackendSettings, workdir: Path) -> Iterator[BackendProcess]:
    """A second replica on the session's database and NATS, for the module that asks for it."""
    process = start_backend(settings, workdir / f"backend-second-{uuid.uuid4().hex[:8]}.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
async def alert_stack(server_urls: dict[str, str], workdir: Path) -> AsyncIterator[tuple[Stack, Receiver]]:
    """Two replicas with alert rules of seconds, a one-minute wait target at `site-*`, and their webhooks sent
    to a real receiver on loopback that answers each message's first attempt 503."""
    folder = workdir / f"alerts-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "rules.toml").write_text(ALERT_RULES)
    (folder / "sites.toml").write_text("[defaults]\nwait_target_s = 60\n")
    with webhook_receiver(fail_first=1) as receiver:
        env = {"SWITCHBOARD_ALERT_RULES_FILE": str(folder / "rules.toml"),
               "SWITCHBOARD_SITES_FILE": str(folder / "sites.toml"),
               "SWITCHBOARD_ALERT_CHECK_INTERVAL_S": "0.3", "SWITCHBOARD_ALERT_WEBHOOKS": receiver.url,
               "SWITCHBOARD_ALERT_WEBHOOK_SECRET": ALERT_SECRET,
               "SWITCHBOARD_ALERT_WEBHOOK_RETRY_S": "0.3,0.6",
               "SWITCHBOARD_ALERT_WEBHOOK_ALLOW_PRIVATE": "true",
               "SWITCHBOARD_ALERT_DELIVERY_INTERVAL_S": "0.2"}
        async with own_stack(server_urls["database_url"], folder, env, replicas=2) as stack:
            yield stack, receiver
