"""Real servers for every test: the ones named by SWITCHBOARD_DATABASE_URL / SWITCHBOARD_NATS_URL,
or embedded ones started for the session when those are unset.

With external servers each session gets a database of its own and fresh streams. Tests keep out
of each other's way by using their own references and sites (`uid`), never by truncating.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from backend import db, messaging
from backend.auth import mint_token
from backend.ingest.own_events import SIGNATURE_HEADER, sign, signing_key
from switchboard import bus
from switchboard.backend_process import BackendProcess
from switchboard.embedded import embedded_servers
from switchboard.events import SEED_SYSTEMS
from switchboard.settings import Settings

JWT_SECRET = "fake-jwt-secret-for-tests-only-never-deployed"
LAB_SYSTEMS = ("lab_health", "lab_degraded", "lab_traffic", "lab_pace", "lab_floor", "lab_board", "lab_scope",
               "lab_rogue")


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
        yield {**urls, "database_url": database_url or urls["database_url"], "nats_url": nats_url or urls["nats_url"]}


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
async def settings(server_urls: dict[str, str], workdir: Path) -> AsyncIterator[Settings]:
    """A database of this session's own, migrated by its owner, and streams recreated from scratch.
    The backend gets the runtime role's URL: the whole suite runs it without the owner's rights."""
    name = f"switchboard_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_urls["database_url"])
    await admin.execute(f'CREATE DATABASE "{name}"')
    await db.ensure_runtime_role(admin)
    owner_url = _with_database(server_urls["database_url"], name)
    conn = await asyncpg.connect(owner_url)
    await db.migrate(conn, runtime_role=db.RUNTIME_ROLE)
    await conn.close()

    nc = await bus.connect(server_urls["nats_url"], "test-setup", creds=server_urls.get("nats_creds"))
    js = nc.jetstream()
    await messaging.recreate_streams(js, systems=SEED_SYSTEMS | set(LAB_SYSTEMS))
    await nc.close()

    yield Settings(database_url=db.with_role(owner_url, db.RUNTIME_ROLE), database_owner_url=owner_url,
                   nats_url=server_urls["nats_url"], jwt_secret=JWT_SECRET, data_dir=str(workdir / "data"),
                   nats_creds=server_urls.get("nats_creds"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="session")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The operator's view, the owner's: it may set up what the backend may not (triggers, backdating)."""
    pool = await db.create_pool(settings.database_owner_url)  # type: ignore[arg-type]
    yield pool
    await pool.close()


async def nats_connect(settings: Settings, name: str = "test") -> NATS:
    """A harness connection to the session's NATS, with the backend's credentials when it wants them."""
    return await bus.connect(settings.nats_url or "", name, creds=settings.nats_creds)


@pytest.fixture(scope="session")
async def js(settings: Settings) -> AsyncIterator[nats.js.JetStreamContext]:
    nc = await nats_connect(settings)
    yield nc.jetstream()
    await nc.close()


def backend_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ, "SWITCHBOARD_DATABASE_URL": settings.database_url or "",
        # the runtime role only: the session's database is migrated already
        "SWITCHBOARD_DATABASE_OWNER_URL": "",
        "SWITCHBOARD_NATS_URL": settings.nats_url or "", "SWITCHBOARD_NATS_CREDS": settings.nats_creds or "",
        "SWITCHBOARD_JWT_SECRET": JWT_SECRET,
        "SWITCHBOARD_DATA_DIR": str(settings.data_dir), "SWITCHBOARD_LOG_LEVEL": "WARNING",
        # command delivery in seconds, not minutes, so that retries and timeouts are testable
        "SWITCHBOARD_COMMAND_RELAY_INTERVAL_S": "0.1", "SWITCHBOARD_COMMAND_ANSWER_TIMEOUT_S": "4",
        "SWITCHBOARD_COMMAND_BACKOFF_S": "0.2", "SWITCHBOARD_COMMAND_BACKOFF_MAX_S": "0.5",
        "SWITCHBOARD_COMMAND_MAX_ATTEMPTS": "3", "SWITCHBOARD_RETRY_DEBOUNCE_S": "1",
        # systems of their own for the integration tests, whose health no other test touches
        "SWITCHBOARD_EXTRA_SYSTEMS": ",".join(LAB_SYSTEMS), "SWITCHBOARD_INTEGRATION_CHECK_INTERVAL_S": "0.5",
        # figures once a minute only: a test of "published once" must not see a figures round
        "SWITCHBOARD_INTEGRATION_FIGURES_INTERVAL_S": "60",
    }


def start_backend(settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None) -> BackendProcess:
    return BackendProcess({**backend_env(settings), **(extra_env or {})}, log_path).start().wait_ready()


@pytest.fixture(scope="session")
def backend(settings: Settings, workdir: Path) -> Iterator[BackendProcess]:
    process = start_backend(settings, workdir / "backend.log")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def token(settings: Settings) -> Callable[..., str]:
    def make(role: str | list[str], sites: list[str] | str = "*", system: str | None = None,
             ttl: timedelta = timedelta(hours=1)) -> str:
        roles = [role] if isinstance(role, str) else role
        return mint_token(settings, sub=f"test-{'-'.join(roles)}", roles=roles, sites=sites, system=system, ttl=ttl)

    return make


@pytest.fixture
async def api(backend: BackendProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=backend.url, timeout=10) as client:
        yield client


@pytest.fixture
def uid() -> str:
    """A short unique suffix for this test's references and sites."""
    return uuid.uuid4().hex[:8]


def cloud_event(type_: str, subject: str, data: dict[str, Any], *, source: str | None = None,
                time: datetime | None = None, id: str | None = None) -> dict[str, Any]:  # noqa: A002
    system = subject.split(":", 1)[0]
    return {
        "specversion": "1.0", "id": id or uuid.uuid4().hex, "source": source or f"/{system}", "type": type_,
        "subject": subject, "time": (time or datetime.now(UTC)).isoformat(), "data": data,
    }


async def publish(js: nats.js.JetStreamContext, event: dict[str, Any] | bytes, subject: str | None = None) -> None:
    """Publish as a connector does; raw bytes (for malformed input) need an explicit subject."""
    if isinstance(event, bytes):
        assert subject is not None
        await js.publish(subject, event)
        return
    system = event["source"].split("/")[1]
    await js.publish(subject or f"svc.events.{system}.{event['type']}", msgspec.json.encode(event),
                     headers={"Nats-Msg-Id": f"{event['source']} {event['id']}"})


async def publish_as_backend(js: nats.js.JetStreamContext, settings: Settings, event: dict[str, Any]) -> None:
    """Publish as the backend publishes its own events (`/manual/<user>`, `/switchboard`): signed with its key."""
    body = msgspec.json.encode(event)
    await js.publish(f"svc.events.{event['source'].split('/')[1]}.{event['type']}", body,
                     headers={"Nats-Msg-Id": f"{event['source']} {event['id']}",
                              SIGNATURE_HEADER: sign(signing_key(settings), body)})


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; its last value otherwise fails the test."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def refusing_site(pool: asyncpg.Pool, site: str) -> AsyncIterator[None]:
    """An operator's constraint that makes the database refuse `site`'s journeys, standing in for any
    database-side refusal of a valid event (it becomes an `apply_error`); dropped on exit."""
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    await pool.execute(f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.site = '{site}' THEN RAISE EXCEPTION 'site is closed for maintenance'; END IF;
        RETURN NEW; END $$;
        CREATE TRIGGER {name} BEFORE INSERT ON journeys FOR EACH ROW EXECUTE FUNCTION {name}();
    """)
    try:
        yield
    finally:
        await pool.execute(f"DROP TRIGGER {name} ON journeys; DROP FUNCTION {name}()")
