"""Backend processes for tests: the session's configuration, and stacks of a test's own."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client as NATS

from switchboard import bus
from switchboard.backend_process import BackendProcess
from switchboard.settings import Settings

JWT_SECRET = "fake-jwt-secret-for-tests-only-never-deployed"


LAB_SYSTEMS = ("lab_health", "lab_degraded", "lab_traffic", "lab_pace", "lab_floor", "lab_board", "lab_scope",
               "lab_rogue")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def nats_connect(settings: Settings, name: str = "test") -> NATS:
    """A harness connection to the session's NATS, with the backend's credentials when it wants them."""
    return await bus.connect(settings.nats_url or "", name, creds=settings.nats_creds)


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
