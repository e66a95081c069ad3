"""What every benchmark shares: servers, fresh databases, progress lines and the closing JSON line."""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from switchboard.settings import BusSection, DatabaseSection, load_section
from tools.embedded import embedded_servers


@contextlib.contextmanager
def bench_servers(folder: Path, *, nats_fsync: bool = True,
                  nats_auth: bool = True) -> Iterator[dict[str, str]]:
    """The configured servers, or embedded ones in `folder`; "nats_creds" when NATS wants credentials
    (the configured SWITCHBOARD_NATS_CREDS, or the embedded server's backend credentials)."""
    database, bus = load_section(DatabaseSection), load_section(BusSection)
    if database.database_url and bus.nats_url:
        yield {"database_url": database.database_url, "nats_url": bus.nats_url,
               **({"nats_creds": bus.nats_creds} if bus.nats_creds else {})}
        return
    progress("starting embedded Postgres and NATS")
    with embedded_servers(folder, postgres=not database.database_url, nats=not bus.nats_url,
                          nats_fsync=nats_fsync, nats_auth=nats_auth) as urls:
        creds = urls.get("nats_creds") if not bus.nats_url else bus.nats_creds
        yield {"database_url": database.database_url or urls["database_url"],
               "nats_url": bus.nats_url or urls["nats_url"], **({"nats_creds": creds} if creds else {})}


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, label: str) -> AsyncIterator[str]:
    """A database created for this run and dropped after it."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path="/" + name))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


class Meter:
    """Prints the running rate at most once a second while something counts up to a total."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.started = time.perf_counter()
        self._last_print = 0.0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self._last_print >= 1.0 or done >= self.total:
            self._last_print = now
            rate = done / max(now - self.started, 1e-9)
            progress(f"{self.label}: {done:,}/{self.total:,} ({rate:,.0f}/s)")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def report(figures: dict[str, object]) -> None:
    """The last line of every benchmark: one JSON object of its figures."""
    print(json.dumps(figures), flush=True)
