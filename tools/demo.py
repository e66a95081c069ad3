"""`switchboard demo`: embedded Postgres and NATS, the backend, the five simulated upstream systems and
the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import asyncpg

from backend import db
from connectors.sim import SYSTEMS
from switchboard.settings import TokenSection, load_section
from tools.connector_cli import issue_profile, run_simulation
from tools.embedded import embedded_servers


def _step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


def _wait_ready(url: str, process: subprocess.Popen[bytes], name: str = "backend",
                timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the {name} exited with code {process.returncode}")
        with contextlib.suppress(OSError), \
                urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
            if response.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"the {name} did not become ready in time")


async def _create_runtime_role(owner_url: str) -> None:
    conn = await asyncpg.connect(owner_url)
    try:
        await db.ensure_runtime_role(conn)
    finally:
        await conn.close()


def _without_database(env: dict[str, str]) -> dict[str, str]:
    """The dashboard talks to the backend only: it gets no database URL."""
    return {k: v for k, v in env.items() if not k.startswith("SWITCHBOARD_DATABASE_")}


def run_demo(*, host: str, port: int, sites: str, speed: float, dashboard_port: int = 8080) -> None:
    from switchboard.tokens import mint_token  # noqa: PLC0415

    # `kill` stops the demo as cleanly as Ctrl-C does
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings = load_section(TokenSection)
    data_dir = Path(settings.data_dir) / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    total = 5
    _step(1, total, f"starting embedded Postgres and NATS JetStream in {data_dir}")
    with embedded_servers(data_dir) as urls:
        print(f"nats: {urls['nats_url']}", flush=True)
        # the backend runs as the runtime role and migrates as the owner (docs/security.md)
        asyncio.run(_create_runtime_role(urls["database_url"]))
        env = {**os.environ, "SWITCHBOARD_DATABASE_URL": db.with_role(urls["database_url"], db.RUNTIME_ROLE),
               "SWITCHBOARD_DATABASE_OWNER_URL": urls["database_url"],
               "SWITCHBOARD_NATS_URL": urls["nats_url"], "SWITCHBOARD_NATS_CREDS": urls["nats_creds"]}
        # a person reads this terminal: plain lines unless JSON was asked for
        env.setdefault("SWITCHBOARD_LOG_FORMAT", "text")
        backend_url = f"http://{host}:{port}"
        _step(2, total, f"starting the backend on {backend_url}")
        backend = subprocess.Popen([sys.executable, "-m", "tools.cli", "backend", "--host", host,
                                    "--port", str(port)], env=env)
        dashboard: subprocess.Popen[bytes] | None = None
        try:
            _wait_ready(backend_url + "/ready", backend)
            dashboard_url = f"http://{host}:{dashboard_port}"
            _step(3, total, f"starting the dashboard on {dashboard_url}")
            dashboard = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", "dashboard", "--demo", "--host", host,
                 "--port", str(dashboard_port)],
                env={**_without_database(env), "SWITCHBOARD_BACKEND_URL": backend_url})
            _wait_ready(dashboard_url + "/signin", dashboard, "dashboard")
            print(f"  open {dashboard_url} and pick a role and site", flush=True)
            _step(4, total, "tokens for this demo (12 hours):")
            for role in ("manager", "floor_staff", "sre", "admin"):
                token = mint_token(settings, sub=f"demo-{role}", roles=[role], sites="*",
                                   ttl=timedelta(hours=12))
                print(f"  {role:12s} {token}")
            print(f"  try: curl -H 'Authorization: Bearer <token>' {backend_url}/api/v1/flow")
            print(f"  API docs: {backend_url}/schema/swagger")
            # each simulated system connects as its own connector, from a profile like any other's
            profiles = data_dir / "connector-profiles"
            for system in SYSTEMS:
                issue_profile(Path(urls["nats_issuer"]), system=system, sites=[], out=profiles,
                              nats_url=urls["nats_url"], backend_url=backend_url)
            print(f"connector profiles: {profiles}", flush=True)
            print(f"  revoke one: switchboard connector revoke --system queue --issuer {urls['nats_issuer']}"
                  f" --nats-url {urls['nats_url']}", flush=True)
            _step(5, total, f"simulating crm, appointments, queue, contact_center and core for sites {sites}"
                  f" at {speed:g}x (Ctrl-C stops everything)")
            asyncio.run(run_simulation(
                systems=list(SYSTEMS), sites=[s for s in sites.split(",") if s], speed=speed,
                arrivals_per_hour=20.0, nats_url=urls["nats_url"], data_dir=data_dir / "connectors",
                faults={}, admin_port=0, creds={s: str(profiles / f"{s}.creds") for s in SYSTEMS}))
        except KeyboardInterrupt:
            print("\nstopping…")
        finally:
            if dashboard is not None:
                dashboard.terminate()
                dashboard.wait(timeout=20)
            backend.terminate()
            try:
                backend.wait(timeout=20)
            except subprocess.TimeoutExpired:  # its NATS drain can outlast this; the demo's data is throwaway
                backend.kill()
                backend.wait()
