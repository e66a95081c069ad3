"""compose.yaml against the Compose specification, and the properties the clustered deployment relies on.

Docker is not needed: the file is validated with the official Compose specification JSON schema,
vendored as tests/compose-spec.json. Its source: `compose/config/compose_spec.json` in the
`docker-compose==1.29.2` wheel on PyPI (Apache-2.0), the compose-spec project's
`schema/compose-spec.json` (https://github.com/compose-spec/compose-spec) as of that release.
The NATS configuration is checked by the real `nats-server -t`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema  # type: ignore[import-untyped]  # untyped; its stubs (types-jsonschema) are not in the lock
import msgspec
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from backend.db import RUNTIME_ROLE
from backend.messaging import StreamsSection
from tools.cli import main
from tools.embedded import EmbeddedNats

ROOT = Path(__file__).resolve().parent.parent
NATS_NODES = ("nats-1", "nats-2", "nats-3")
# what a hard-coded secret looks like: a literal value for a key that names one
SECRET_KEY = re.compile(r"(PASSWORD|SECRET|TOKEN|KEY)$", re.IGNORECASE)
INTERPOLATED_REQUIRED = re.compile(r"^\$\{[A-Z_]+:\?[^}]+\}$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_file_follows_the_compose_specification(compose):
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    jsonschema.Draft201909Validator(schema).validate(compose)


def test_a_file_breaking_the_specification_is_refused(compose):
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    broken = {**compose, "services": {**compose["services"], "backend-1": {**compose["services"]["backend-1"],
                                                                         "healthcheck": {"test": 42}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft201909Validator(schema).validate(broken)


def test_three_nats_nodes_route_to_each_other_and_streams_get_three_replicas(compose):
    services = compose["services"]
    assert set(NATS_NODES) <= set(services)
    # the routes, with their password, come from the include nats-init writes (a node skips its own)
    routed = {re.fullmatch(r"([\w-]+):6222", r).group(1)  # type: ignore[union-attr]
              for r in _flag(services["nats-init"]["command"], "--routes").split(",")}
    assert routed == set(NATS_NODES)
    for node in NATS_NODES:
        command = services[node]["command"]
        assert _flag(command, "--server_name") == node and "--routes" not in command
        assert any(v.startswith("./deploy/nats.conf:") for v in services[node]["volumes"])
        assert "nats-auth:/etc/nats/auth:ro" in services[node]["volumes"]
        assert services[node]["depends_on"]["nats-init"]["condition"] == "service_completed_successfully"
    assert "sync_interval: always" in (ROOT / "deploy" / "nats.conf").read_text()
    backend_env = services["backend-1"]["environment"]
    streams = msgspec.convert({"stream_replicas": backend_env["SWITCHBOARD_STREAM_REPLICAS"]}, StreamsSection,
                              strict=False)  # as load_section reads it
    assert streams.stream_replicas == 3
    nats_urls = backend_env["SWITCHBOARD_NATS_URL"].split(",")
    assert {u.split("//")[1].split(":")[0] for u in nats_urls} == set(NATS_NODES)


def test_the_shared_nats_configuration_is_valid_for_nats_server(tmp_path):
    """With the includes `switchboard nats init` writes, as the nats-init service does; refused without
    them."""
    shutil.copy(ROOT / "deploy" / "nats.conf", tmp_path / "nats.conf")
    check = [EmbeddedNats.binary(), "-c", str(tmp_path / "nats.conf"), "-t"]
    assert subprocess.run(check, capture_output=True, timeout=30, check=False).returncode != 0
    main(["nats", "init", "--issuer", str(tmp_path / "issuer"), "--server-dir", str(tmp_path / "auth"),
          "--resolver-dir", str(tmp_path / "accounts"), "--routes", "nats-1:6222,nats-2:6222,nats-3:6222",
          "--backend-creds", str(tmp_path / "backend" / "backend.creds")])
    result = subprocess.run(check, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "nats-route://route:" in (tmp_path / "auth" / "cluster.conf").read_text()
    no_tls = (tmp_path / "auth" / "tls.conf").read_text().splitlines()
    assert no_tls and all(line.startswith("#") for line in no_tls)  # without --tls-names: a comment only
    # as compose runs it: TLS on client and route ports, the authority beside the backend's credentials
    def init_with_tls(names: str, *more: str) -> None:
        main(["nats", "init", "--issuer", str(tmp_path / "issuer"), "--server-dir", str(tmp_path / "auth"),
              "--resolver-dir", str(tmp_path / "accounts"), "--routes", "nats-1:6222,nats-2:6222,nats-3:6222",
              "--backend-creds", str(tmp_path / "backend" / "backend.creds"), "--tls-names", names,
              "--profiles", str(tmp_path / "profiles"), "--profiles-for", "queue", *more])

    init_with_tls("nats-1,nats-2,nats-3,localhost,127.0.0.1")
    result = subprocess.run(check, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "handshake_first: true" in (tmp_path / "auth" / "tls.conf").read_text()
    assert "verify: true" in (tmp_path / "auth" / "cluster.conf").read_text()
    authority = (tmp_path / "issuer" / "tls-ca.pem").read_text()
    assert (tmp_path / "backend" / "nats-ca.pem").read_text() == authority
    assert (tmp_path / "profiles" / "nats-ca.pem").read_text() == authority
    profile = (tmp_path / "profiles" / "queue.env").read_text()
    assert f"SWITCHBOARD_NATS_TLS_CA={(tmp_path / 'profiles' / 'nats-ca.pem').resolve()}" in profile
    # the servers' certificate and key in one owner-only file, kept while it is for the same names
    server = tmp_path / "auth" / "tls-server.pem"
    issued = server.read_text()
    assert x509.load_pem_x509_certificate(issued.encode()) and load_pem_private_key(issued.encode(), None)
    assert server.stat().st_mode & 0o777 == 0o600
    init_with_tls("nats-1,nats-2,nats-3,localhost,127.0.0.1")
    assert server.read_text() == issued
    init_with_tls("nats-1,nats-2,nats-3,nats-4,localhost,127.0.0.1")
    assert server.read_text() != issued
    # profiles trusting another authority than the one that signed the servers' certificate: refused
    with pytest.raises(SystemExit, match="the profiles get that one, not --nats-tls-ca"):
        init_with_tls("nats-1", "--nats-tls-ca", str(tmp_path / "issuer" / "tls-ca.pem"))
    kept = server.read_text()
    refused = re.escape("--tls-names: not a host name or address: 'nats 1', '*.nats'")
    with pytest.raises(SystemExit, match=refused):
        init_with_tls("nats 1,*.nats,127.0.0.1")
    assert server.read_text() == kept  # the last good one stays
    # monitoring on loopback only
    assert "http: 127.0.0.1:8222" in (ROOT / "deploy" / "nats.conf").read_text()


def test_nats_speaks_tls_under_every_name_it_is_reached_by(compose):
    """tests/test_nats_tls.py runs what `nats init --tls-names` writes; here, that compose asks for it under
    every name its clients and nodes use, and gives the backends and connectors the authority."""
    services = compose["services"]
    names = set(_flag(services["nats-init"]["command"], "--tls-names").split(","))
    urls = services["backend-1"]["environment"]["SWITCHBOARD_NATS_URL"].split(",")
    hosts = {u.split("//")[1].split(":")[0] for u in urls}
    assert hosts | set(NATS_NODES) | {"127.0.0.1", "localhost"} <= names  # loopback: the published port
    init = services["nats-init"]["command"]
    for backend in ("backend-1", "backend-2"):
        env = services[backend]["environment"]
        # nats init writes the authority beside the backend's credentials (nats-ca.pem), in the volume
        # they mount
        assert env["SWITCHBOARD_NATS_CREDS"] == _flag(init, "--backend-creds")
        beside = Path(_flag(init, "--backend-creds")).parent / "nats-ca.pem"
        assert Path(env["SWITCHBOARD_NATS_TLS_CA"]) == beside
    # the simulated connectors read it from their profiles' folder, where nats init copies it too
    assert _flag(services["connectors"]["command"], "--profiles") == _flag(init, "--profiles")


def test_the_nats_nodes_run_the_nats_server_version_the_tests_run(compose):
    installed = subprocess.run([EmbeddedNats.binary(), "--version"], capture_output=True, text=True,
                               timeout=30, check=True).stdout  # "nats-server: v2.15.1"
    version = re.search(r"v(\d+\.\d+\.\d+)", installed).group(1)  # type: ignore[union-attr]
    for node in NATS_NODES:
        assert compose["services"][node]["image"] == f"nats:{version}-alpine"


def test_two_backends_a_dashboard_and_connectors_from_one_image(compose):
    services = compose["services"]
    roles = {name: s["command"][0] for name, s in services.items() if s.get("build")}
    assert roles == {"migrate": "migrate", "backend-1": "backend", "backend-2": "backend",
                     "dashboard": "dashboard", "connectors": "connector", "nats-init": "nats"}
    assert len({services[name]["image"] for name in roles}) == 1
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.12-slim" in dockerfile
    assert "requirements.lock" in dockerfile and 'ENTRYPOINT ["switchboard"]' in dockerfile


def test_every_long_running_service_has_a_health_check(compose):
    for name, service in compose["services"].items():
        if service.get("restart") == "no":  # a one-shot (nats-init) is waited for by its exit, not its health
            continue
        check = service.get("healthcheck")
        assert check and check["test"][0] == "CMD" and len(check["test"]) > 1, f"{name} has no health check"
    for backend in ("backend-1", "backend-2"):
        assert "/ready" in " ".join(compose["services"][backend]["healthcheck"]["test"])
    assert "pg_isready" in compose["services"]["postgres"]["healthcheck"]["test"]
    for node in NATS_NODES:
        assert ":8222/healthz" in " ".join(compose["services"][node]["healthcheck"]["test"])


def test_no_secret_is_written_in_the_file(compose):
    seen = 0
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for key, value in environment.items():
            if SECRET_KEY.search(key):
                seen += 1
                assert INTERPOLATED_REQUIRED.match(str(value)), f"{name}.{key} must come from the environment"
            if key.startswith("SWITCHBOARD_DATABASE_"):
                password = re.fullmatch(r"postgresql://[^:]+:([^@]+)@.+", value).group(1)  # type: ignore[union-attr]
                assert INTERPOLATED_REQUIRED.match(password), f"{name}: the database password is written in"
    assert seen >= 5  # the Postgres password and the JWT secret of every Switchboard process


class Dsn(NamedTuple):
    user: str
    host: str
    database: str


def _dsn(value: str) -> Dsn:
    """A database URL whose password is interpolated (which URL parsers do not read: `${X:?…}`)."""
    match = re.fullmatch(r"postgresql://([^:@]+):\$\{[^}]+\}@([^/]+)/(\w+)", value)
    assert match, f"{value} is not postgresql://user:${{PASSWORD}}@host/database"
    return Dsn(*match.groups())


def _environment(compose: dict[str, Any], name: str) -> dict[str, str]:
    return compose["services"][name].get("environment", {})


def test_the_dashboard_and_the_connectors_get_no_database_and_no_jwt_secret(compose):
    for name in ("dashboard", "connectors"):
        environment = _environment(compose, name)
        assert environment, f"{name} has an environment"
        assert not [key for key in environment if "DATABASE" in key or key.endswith("_SECRET")], name
    assert "SWITCHBOARD_NATS_URL" in _environment(compose, "connectors")
    assert _environment(compose, "dashboard")["SWITCHBOARD_DASHBOARD_DEMO"] == "false"
    assert "--demo" not in compose["services"]["dashboard"]["command"]


def test_backends_run_as_the_runtime_role_once_migrate_has_completed(compose):
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"
    owner = _dsn(_environment(compose, "migrate")["SWITCHBOARD_DATABASE_OWNER_URL"])
    assert owner.user == "switchboard" and owner.database == "switchboard"
    assert not [key for key in _environment(compose, "migrate") if key.endswith("_SECRET") or "NATS" in key]
    for backend in ("backend-1", "backend-2"):
        environment = _environment(compose, backend)
        runtime = _dsn(environment["SWITCHBOARD_DATABASE_URL"])
        assert runtime.user == RUNTIME_ROLE != owner.user and runtime.database == owner.database
        assert "SWITCHBOARD_DATABASE_OWNER_URL" not in environment, "backends never get the owner's password"
        assert services[backend]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert _environment(compose, "migrate")["SWITCHBOARD_DATABASE_URL"] == _environment(
        compose, "backend-1")["SWITCHBOARD_DATABASE_URL"], "migrate grants the role the backends run as"


def test_postgres_makes_the_two_roles_with_passwords_from_the_environment(compose):
    postgres = compose["services"]["postgres"]
    mounted = [v for v in postgres["volumes"] if v.startswith("./deploy/postgres-roles.sh:")]
    assert mounted and mounted[0].split(":")[1].startswith("/docker-entrypoint-initdb.d/")
    script = (ROOT / "deploy" / "postgres-roles.sh").read_text()
    for role, variable in (("switchboard", "owner_password"), (RUNTIME_ROLE, "app_password")):
        assert re.search(rf"CREATE ROLE {role} LOGIN NOSUPERUSER .*PASSWORD :'{variable}';", script)
    assert 'owner_password="$SWITCHBOARD_OWNER_PASSWORD"' in script
    assert 'app_password="$SWITCHBOARD_APP_PASSWORD"' in script
    assert "CREATE DATABASE switchboard OWNER switchboard;" in script
    for key in ("SWITCHBOARD_OWNER_PASSWORD", "SWITCHBOARD_APP_PASSWORD"):
        assert INTERPOLATED_REQUIRED.match(postgres["environment"][key])
    superuser = [name for name, service in compose["services"].items()
                 for key, value in service.get("environment", {}).items()
                 if key.startswith("SWITCHBOARD_DATABASE_") and _dsn(value).user == "postgres"]
    assert superuser == [], "no Switchboard process connects as the superuser"


def test_no_nats_monitoring_port_is_published(compose):
    published = [(name, port) for name, service in compose["services"].items()
                 for port in service.get("ports", []) if str(port).rsplit(":", 1)[-1] == "8222"]
    assert published == []
    assert all(str(port).startswith("127.0.0.1:") for service in compose["services"].values()
               for port in service.get("ports", [])), "everything published is published on loopback only"
