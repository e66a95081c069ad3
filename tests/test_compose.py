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
from typing import Any

import jsonschema
import pytest
import yaml

from switchboard.cli import main
from switchboard.embedded import EmbeddedNats
from switchboard.settings import Settings

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
    assert Settings(stream_replicas=int(backend_env["SWITCHBOARD_STREAM_REPLICAS"])).stream_replicas == 3
    assert {u.split("//")[1].split(":")[0] for u in backend_env["SWITCHBOARD_NATS_URL"].split(",")} == set(NATS_NODES)


def test_the_shared_nats_configuration_is_valid_for_nats_server(tmp_path):
    """With the includes `switchboard nats init` writes, as the nats-init service does; refused without them."""
    shutil.copy(ROOT / "deploy" / "nats.conf", tmp_path / "nats.conf")
    check = [EmbeddedNats.binary(), "-c", str(tmp_path / "nats.conf"), "-t"]
    assert subprocess.run(check, capture_output=True, timeout=30, check=False).returncode != 0
    main(["nats", "init", "--issuer", str(tmp_path / "issuer"), "--server-dir", str(tmp_path / "auth"),
          "--resolver-dir", str(tmp_path / "accounts"), "--routes", "nats-1:6222,nats-2:6222,nats-3:6222",
          "--backend-creds", str(tmp_path / "backend" / "backend.creds")])
    result = subprocess.run(check, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert "nats-route://route:" in (tmp_path / "auth" / "cluster.conf").read_text()
    assert "http: 127.0.0.1:8222" in (ROOT / "deploy" / "nats.conf").read_text()  # monitoring on loopback only


def test_two_backends_a_dashboard_and_connectors_from_one_image(compose):
    services = compose["services"]
    roles = {name: s["command"][0] for name, s in services.items() if s.get("build")}
    assert roles == {"backend-1": "backend", "backend-2": "backend", "dashboard": "dashboard",
                     "connectors": "connector", "nats-init": "nats"}
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
            if key.endswith("DATABASE_URL"):
                password = re.fullmatch(r"postgresql://[^:]+:([^@]+)@.+", value).group(1)  # type: ignore[union-attr]
                assert INTERPOLATED_REQUIRED.match(password), f"{name}: the database password is written in"
    assert seen >= 5  # the Postgres password and the JWT secret of every Switchboard process
