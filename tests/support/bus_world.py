"""A backend on an authenticated NATS and a database of a test module's own, and connector profiles issued
by `switchboard connector profile` as an operator runs it (always authenticated, even when the rest of the
suite runs against an unauthenticated NATS)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values
from nats.aio.client import Client as NATS

from switchboard import bus
from tests.support.backends import JWT_SECRET
from tools.backend_process import BackendProcess
from tools.bench.common import scratch_database
from tools.embedded import EmbeddedNats


@dataclass
class BusWorld:
    server: EmbeddedNats
    backend: BackendProcess
    database_url: str
    nc: NATS  # the backend's credentials: the harness
    folder: Path

    def env(self) -> dict[str, str]:
        """An operator's environment: the servers, no credentials."""
        return {**os.environ, "SWITCHBOARD_DATABASE_URL": self.database_url,
                "SWITCHBOARD_NATS_URL": self.server.url, "SWITCHBOARD_DATA_DIR": str(self.folder / "data"),
                "SWITCHBOARD_LOG_LEVEL": "WARNING"}

    def cli(self, *args: str) -> str:
        """`switchboard connector …` against this world's issuer and NATS, as an operator runs it."""
        assert self.server.issuer is not None
        done = subprocess.run([sys.executable, "-m", "tools.cli", "connector", *args, "--issuer",
                               str(self.server.issuer.folder), "--nats-url", self.server.url],
                              env=self.env(), capture_output=True, text=True, timeout=30, check=True)
        return done.stdout

    def profile(self, system: str, *sites: str) -> dict[str, str]:
        out = self.folder / f"profiles-{uuid.uuid4().hex[:6]}"
        self.cli("profile", "--system", system, "--out", str(out), *(a for s in sites for a in ("--site", s)))
        return {k: v for k, v in dotenv_values(out / f"{system}.env").items() if v is not None}


@asynccontextmanager
async def bus_world(server_urls: dict[str, str], folder: Path,
                    backend_env: dict[str, str] | None = None) -> AsyncIterator[BusWorld]:
    """`backend_env`: settings of the backend's own, besides the servers and its credentials."""
    server = EmbeddedNats(folder / "nats")
    server.start()
    try:
        async with scratch_database(server_urls["database_url"], "busworld") as database_url:
            env = {**os.environ, "SWITCHBOARD_DATABASE_URL": database_url, "SWITCHBOARD_NATS_URL": server.url,
                   "SWITCHBOARD_NATS_CREDS": server.creds or "", "SWITCHBOARD_JWT_SECRET": JWT_SECRET,
                   "SWITCHBOARD_DATA_DIR": str(folder / "data"), "SWITCHBOARD_LOG_LEVEL": "WARNING",
                   **(backend_env or {})}
            backend = BackendProcess(env, folder / "backend.log").start()
            try:
                await asyncio.to_thread(backend.wait_ready)
                nc = await bus.connect(server.url, "test-bus-world", creds=server.creds)
                try:
                    yield BusWorld(server, backend, database_url, nc, folder)
                finally:
                    await nc.close()
            finally:
                backend.stop()
    finally:
        server.stop()
