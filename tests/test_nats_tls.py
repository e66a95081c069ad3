"""NATS over TLS (SWITCHBOARD_NATS_TLS_CA, docs/security.md) on real servers: a TLS, authenticated NATS of
this module's own with a certificate from a throwaway authority, a backend on it and a connector from a
profile; what the server says of each connection; the clients it refuses, and the plain server a TLS client
refuses."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats.errors
import pytest
from dotenv import dotenv_values

from connectors.sdk import Connector, ConnectorRuntime
from switchboard import bus
from switchboard.natsauth import init_deployment
from tests.support.backends import JWT_SECRET
from tests.support.certificates import issue_server_certificate
from tests.support.waits import eventually
from tools.backend_process import BackendProcess
from tools.bench.common import scratch_database
from tools.embedded import EmbeddedNats, free_port


@dataclass
class TlsWorld:
    server: EmbeddedNats
    ca: Path  # the authority the server's certificate comes from
    database_url: str
    folder: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "SWITCHBOARD_DATABASE_URL": self.database_url,
                "SWITCHBOARD_NATS_URL": self.server.url,
                "SWITCHBOARD_NATS_CREDS": self.server.creds or "", "SWITCHBOARD_NATS_TLS_CA": str(self.ca),
                "SWITCHBOARD_JWT_SECRET": JWT_SECRET, "SWITCHBOARD_DATA_DIR": str(self.folder / "data"),
                "SWITCHBOARD_LOG_LEVEL": "WARNING"}


@pytest.fixture(scope="module")
async def world(server_urls, workdir) -> AsyncIterator[TlsWorld]:
    folder = workdir / f"nats-tls-{uuid.uuid4().hex[:6]}"
    ca, certificate = issue_server_certificate(folder / "certificates")
    server = EmbeddedNats(folder / "nats", tls=certificate)
    server.start()
    try:
        async with scratch_database(server_urls["database_url"], "natstls") as database_url:
            yield TlsWorld(server, ca, database_url, folder)
    finally:
        server.stop()


class Desk(Connector):
    system = "queue"


async def connections(world: TlsWorld) -> list[dict[str, Any]]:
    """The server's own account of its client connections (the system account's CONNZ), over TLS too."""
    assert world.server.issuer is not None
    nc = await bus.connect(world.server.url, "test-tls-sys", creds=str(world.server.issuer.monitor_creds()),
                           tls_ca=str(world.ca), reconnect=False)
    try:
        reply = await nc.request("$SYS.REQ.SERVER.PING.CONNZ", b'{"limit": 1024}', timeout=5)
    finally:
        await nc.close()
    return msgspec.json.decode(reply.data)["data"]["connections"]


async def applied(database_url: str, source: str, event_id: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM events WHERE source = $1 AND id = $2",
                                        source, event_id))
    finally:
        await conn.close()


async def test_the_backend_and_a_connector_from_a_profile_speak_tls_only(world, uid, tmp_path):
    backend = BackendProcess(world.env(), world.folder / "backend.log").start()
    try:
        await asyncio.to_thread(backend.wait_ready)
        out = tmp_path / "profiles"
        assert world.server.issuer is not None
        subprocess.run([sys.executable, "-m", "tools.cli", "connector", "profile", "--system", "queue",
                        "--out", str(out), "--issuer", str(world.server.issuer.folder)],
                       env=world.env(), capture_output=True, text=True, timeout=30, check=True)
        profile = {k: v for k, v in dotenv_values(out / "queue.env").items() if v is not None}
        # the profile carries its own copy of the authority: the connector's machine needs nothing else
        assert profile["SWITCHBOARD_NATS_TLS_CA"] == str((out / "nats-ca.pem").resolve())
        assert Path(profile["SWITCHBOARD_NATS_TLS_CA"]).read_bytes() == world.ca.read_bytes()

        desk = Desk("tls")
        async with ConnectorRuntime(desk, nats_url=profile["SWITCHBOARD_NATS_URL"], data_dir=tmp_path,
                                    creds=profile["SWITCHBOARD_NATS_CREDS"],
                                    tls_ca=profile["SWITCHBOARD_NATS_TLS_CA"],
                                    heartbeat_interval=1) as runtime:
            async with asyncio.timeout(30):
                await runtime.ready.wait()
            arrived = desk.event("customer.arrived", f"T-{uid}", {"site": f"tls-{uid}"})
            await desk.emit(arrived)
            assert await eventually(lambda: applied(world.database_url, arrived.source, arrived.id),
                                    timeout=20)

            by_name = {c.get("name"): c for c in await connections(world)}
            names = {"switchboard-backend", "switchboard-backend-live", "switchboard-connector-queue-tls"}
            assert names <= by_name.keys()
            for name in names:
                assert by_name[name].get("tls_version"), f"{name} is not on TLS: {by_name[name]}"
        await simulated_systems_find_the_authority_beside_their_profiles(world, uid, out)
    finally:
        backend.stop()


async def simulated_systems_find_the_authority_beside_their_profiles(world: TlsWorld, uid: str,
                                                                     out: Path) -> None:
    """`connector sim --profiles DIR`, as compose runs it: the authority is in DIR, not in its settings."""
    assert world.server.issuer is not None
    subprocess.run([sys.executable, "-m", "tools.cli", "connector", "profile", "--system", "appointments",
                    "--out", str(out), "--issuer", str(world.server.issuer.folder)],
                   env=world.env(), capture_output=True, text=True, timeout=30, check=True)
    site = f"sim-{uid}"
    env = {k: v for k, v in world.env().items()
           if k not in ("SWITCHBOARD_NATS_TLS_CA", "SWITCHBOARD_NATS_CREDS")}
    sim = subprocess.Popen([sys.executable, "-m", "tools.cli", "connector", "sim",
                            "--systems", "appointments,queue", "--sites", site, "--speed", "600",
                            "--arrivals-per-hour", "3600", "--admin-port", str(free_port()),
                            "--profiles", str(out)],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async def journeys() -> int:
            conn = await asyncpg.connect(world.database_url)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM journeys WHERE site = $1", site))
            finally:
                await conn.close()

        assert await eventually(journeys, timeout=30)
        by_name = {c.get("name"): c for c in await connections(world)}
        simulated = [c for name, c in by_name.items()
                     if name and name.startswith("switchboard-connector-") and not name.endswith("-tls")]
        assert simulated and all(c.get("tls_version") for c in simulated)
    finally:
        sim.terminate()
        sim.wait(timeout=20)


async def test_a_plain_client_is_refused(world):
    # the server says nothing until a TLS handshake: no INFO comes, or the server hangs up
    async with asyncio.timeout(15):
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await bus.connect(world.server.url, "test-plain", creds=world.server.creds, reconnect=False,
                              connect_timeout=2)
    assert "test-plain" not in {c.get("name") for c in await connections(world)}


async def test_a_client_trusting_another_authority_is_refused_and_says_why(world, tmp_path, caplog):
    other_ca, _ = issue_server_certificate(tmp_path / "other", name="someone-else")
    caplog.set_level(logging.WARNING, logger="switchboard.bus")
    async with asyncio.timeout(15):
        with pytest.raises(ssl.SSLCertVerificationError):
            await bus.connect(world.server.url, "test-other-ca", creds=world.server.creds,
                              tls_ca=str(other_ca), reconnect=False, connect_timeout=2)
    # a certificate refused is a misconfiguration: it is logged where an operator looks, not at DEBUG
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("certificate verify failed" in w for w in warnings), warnings


async def test_a_tls_client_never_goes_on_in_plain_text(world, workdir):
    plain = EmbeddedNats(workdir / f"plain-{uuid.uuid4().hex[:6]}", auth=False)
    plain.start()
    try:
        # a client that waited for the server to ask for TLS would connect here in plain text
        async with asyncio.timeout(15):
            with pytest.raises(ssl.SSLError):
                await bus.connect(plain.url, "test-no-downgrade", tls_ca=str(world.ca), reconnect=False,
                                  connect_timeout=2)
    finally:
        plain.stop()


async def test_nats_init_with_tls_names_gives_a_cluster_tls_on_clients_and_routes(workdir):
    """What `switchboard nats init --tls-names` writes, as compose's nodes use it (deploy/nats.conf's
    includes): three nodes whose routes are TLS (a stream of three replicas needs all three), reached by
    a backend that trusts the authority written beside its credentials, and by no plain client."""
    folder = workdir / f"tls-cluster-{uuid.uuid4().hex[:6]}"
    ports, route_ports = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    routes = [f"127.0.0.1:{p}" for p in route_ports]
    backend_creds = folder / "backend" / "backend.creds"
    nodes = []
    try:
        for n, (port, route_port) in enumerate(zip(ports, route_ports, strict=True), start=1):
            node = folder / f"node-{n}"
            init_deployment(folder / "issuer", node / "auth", resolver_dir=str(node / "accounts"),
                            routes=routes, backend_creds=backend_creds, tls_names=["127.0.0.1", "localhost"])
            (node / "nats.conf").write_text(
                f"listen: 127.0.0.1:{port}\nserver_name: node-{n}\n"
                f"jetstream {{\n  store_dir: {json.dumps(str(node / 'data'))}\n}}\n"
                'include "auth/auth.conf"\ninclude "auth/tls.conf"\n'
                f"cluster {{\n  name: tls-test\n  listen: 127.0.0.1:{route_port}\n"
                '  include "auth/cluster.conf"\n}\n')
            log = open(node / "nats-server.log", "ab")  # noqa: SIM115 - owned by the child
            nodes.append(subprocess.Popen([EmbeddedNats.binary(), "-c", str(node / "nats.conf")], stdout=log,
                                          stderr=subprocess.STDOUT))
            log.close()
        assert "verify: true" in (folder / "node-1" / "auth" / "cluster.conf").read_text()
        url = ",".join(f"nats://127.0.0.1:{p}" for p in ports)
        ca = backend_creds.parent / "nats-ca.pem"
        nc = None
        async with asyncio.timeout(60):
            while nc is None:
                try:
                    nc = await bus.connect(url, "test-tls-cluster", creds=str(backend_creds), tls_ca=str(ca),
                                           reconnect=False, connect_timeout=2)
                except (OSError, nats.errors.Error, TimeoutError):
                    await asyncio.sleep(0.5)
        try:
            js = nc.jetstream()
            async with asyncio.timeout(60):
                while True:  # the nodes elect a JetStream leader over their routes first
                    try:
                        await js.add_stream(name="TLS_R3", subjects=["tls.r3.>"], num_replicas=3)
                        break
                    except nats.errors.Error:
                        await asyncio.sleep(0.5)
            ack = await js.publish("tls.r3.one", b"over TLS, three copies")
            assert ack.seq == 1
            info = await js.stream_info("TLS_R3")
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        finally:
            await nc.close()
        async with asyncio.timeout(15):
            with pytest.raises((nats.errors.Error, TimeoutError)):
                await bus.connect(f"nats://127.0.0.1:{ports[0]}", "test-plain", creds=str(backend_creds),
                                  reconnect=False, connect_timeout=2)
        # a route port speaks TLS only, with a certificate of the authority on both sides
        auth = folder / "node-1" / "auth"
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(auth / "tls-server.pem")
        firsts = []
        for attempt in (context, None):
            reader, writer = await asyncio.open_connection("127.0.0.1", route_ports[1], ssl=attempt)
            try:
                async with asyncio.timeout(5):
                    firsts.append(await reader.readline())
            finally:
                writer.close()
        over_tls, plain = firsts
        assert over_tls.startswith(b"INFO ") and b'"server_name":"node-2"' in over_tls
        assert plain == b"", plain  # nothing in plain text: the node hangs up
    finally:
        for process in nodes:
            process.terminate()
        for process in nodes:
            process.wait(timeout=20)
