"""No secret in the repository (CONTRACT section 8), local secrets readable by their owner only, and
no HS256 secret shorter than 32 bytes.

Every tracked file is scanned twice: by detect-secrets (keywords, high-entropy strings, known token
formats) and by our own shapes (file names, private keys, NATS seeds, `whsec_` values, long hex or
base64 blobs, passwords in URLs). The one allowance: a line in tests/ that says it is fake.
"""

from __future__ import annotations

import base64
import multiprocessing
import os
import re
import secrets
import stat
import string
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from detect_secrets import SecretsCollection
from detect_secrets.settings import default_settings

from backend.app import create_app
from backend.auth import signing_secret
from switchboard.local_secrets import InsecureSecretError, local_secret
from switchboard.natsauth import creds_text
from switchboard.settings import TokenSection
from switchboard.tokens import jwt_secret, mint_token
from tests.support.settings import backend_settings

ROOT = Path(__file__).resolve().parent.parent
SECRET_NAME = re.compile(r"(secret|credential|password|\.creds$|\.nk$|\.pem$|\.key$|\.p12$|\.pfx$"
                         r"|^id_(rsa|ed25519)|^\.env$|^\.htpasswd$)", re.IGNORECASE)
BASE32 = string.ascii_uppercase + "234567"
# a credentials file's block with something in it (the markers alone are what code and docs talk about)
FILLED_CREDENTIALS = re.compile(rb"-----BEGIN (?:USER NKEY SEED|NATS USER JWT)-----"
                                rb"\s*\n\s*[A-Za-z0-9_.-]{20,}")
CODE_OR_DOCS = (".py", ".md")  # a module or page *about* secrets, scanned by content like every file
SHAPES = {
    "private key": re.compile(r"-----BEGIN ([A-Z]+ )*PRIVATE KEY-----"),
    "nkey seed": re.compile(r"\bS[UANOCPX]A[A-Z2-7]{55}\b"),
    "webhook secret": re.compile(r"whsec_[A-Za-z0-9+/]{16,}"),
    "hex blob": re.compile(r"\b[0-9a-fA-F]{40,}\b"),
    "base64 blob": re.compile(r"(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*[0-9])(?=[A-Za-z0-9+/_-]*[a-z])"
                              r"(?=[A-Za-z0-9+/_-]*[A-Z])[A-Za-z0-9+/_-]{40,}={0,2}"),
    "password in a URL": re.compile(r"[a-z][a-z0-9+.-]*://[\w.%-]+:(?!\$)[\w.%~!*'+,;=-]+@"),
}


def allowed(path: str, line: str) -> bool:
    """A test fixture that says on its line that it is fake; nothing else."""
    return path.startswith("tests/") and "fake" in line.lower()


def tracked_files() -> list[str]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
    return [name for name in listing.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


def shape_findings(path: str, content: bytes) -> list[str]:
    found = []
    if SECRET_NAME.search(Path(path).name) and not path.endswith(CODE_OR_DOCS):
        found.append(f"{path}: named like a secret")
    if b"\0" in content:
        return found  # images: nothing to read
    if FILLED_CREDENTIALS.search(content):
        found.append(f"{path}: NATS credentials")
    for number, line in enumerate(content.decode(errors="replace").splitlines(), 1):
        for shape, pattern in SHAPES.items():
            if pattern.search(line) and not allowed(path, line):
                found.append(f"{path}:{number}: {shape}")
    return found


def detect_secrets_findings(root: Path, paths: list[str]) -> list[str]:
    collection = SecretsCollection(root=str(root))
    with default_settings():
        for path in paths:
            collection.scan_file(path)
    found = []
    for path, secret in collection:
        line = (root / path).read_text(errors="replace").splitlines()[secret.line_number - 1]
        if not allowed(path, line):
            found.append(f"{path}:{secret.line_number}: {secret.type}")
    return found


def test_no_tracked_file_looks_like_a_secret():
    files = tracked_files()
    assert "README.md" in files and "backend/auth.py" in files
    assert not [f for f in files if f.startswith(".switchboard/")], "the data folder is never tracked"
    findings = [f for path in files for f in shape_findings(path, (ROOT / path).read_bytes())]
    assert findings == []


def test_detect_secrets_finds_nothing_in_the_tracked_files(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert detect_secrets_findings(ROOT, tracked_files()) == []


def _planted() -> dict[str, str]:
    key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    seed = "SUA" + "".join(secrets.choice(BASE32) for _ in range(55))
    return {
        "deploy/signing.txt": key,
        "deploy/connector.txt": f"seed: {seed}\n",
        "deploy/hooks.txt": "queue=whsec_" + base64.b64encode(os.urandom(24)).decode(),
        "deploy/a.txt": f"key = {secrets.token_hex(32)}\n",
        "deploy/b.txt": f"value: {secrets.token_urlsafe(48)}\n",
        "deploy/c.txt": f"url: postgresql://switchboard:{secrets.token_hex(8)}@db:5432/switchboard\n",
        ".switchboard/jwt-secret": secrets.token_urlsafe(48),
        "deploy/connector.txt.bak": creds_text(
            f"eyJ0eXAiOiJKV1QifQ.{secrets.token_urlsafe(40)}.sig",
            ("SUA" + "".join(secrets.choice(BASE32) for _ in range(55))).encode()),
    }


@pytest.mark.parametrize("path", list(_planted()))
def test_each_kind_of_secret_is_found_where_it_is_planted(path):
    content = _planted()[path]
    assert shape_findings(path, content.encode()), content


def test_the_markers_of_a_credentials_file_alone_are_no_secret():
    assert shape_findings("docs/x.md", b"a `-----BEGIN NATS USER JWT-----` block, then the seed") == []
    assert shape_findings("switchboard/x.py", b'MARK = "-----BEGIN USER NKEY SEED-----"\n') == []


def test_the_allowance_is_for_tests_that_say_they_are_fake_only():
    line = f'SECRET = "{secrets.token_hex(32)}"  # fake'
    assert shape_findings("tests/test_x.py", line.encode()) == []
    assert shape_findings("backend/x.py", line.encode()), "outside tests/ a fake-looking secret still counts"
    assert shape_findings("tests/test_x.py", line.replace("fake", "real").encode())
    assert shape_findings("tests/fixtures/jwt-secret", b"fake"), "a file named like a secret counts anywhere"


def test_detect_secrets_finds_a_planted_password(tmp_path, monkeypatch):
    value = "pw" + secrets.token_urlsafe(24)  # detect-secrets skips a value starting with "-": 1 token in 64
    (tmp_path / "settings.py").write_text(f'DATABASE_PASSWORD = "{value}"\n')
    (tmp_path / "aws.txt").write_text("aws_access_key_id = AKIA" + "".join(
        secrets.choice(BASE32) for _ in range(16)) + "\n")
    monkeypatch.chdir(tmp_path)
    found = detect_secrets_findings(tmp_path, ["settings.py", "aws.txt"])
    assert {f.split(":")[0] for f in found} == {"settings.py", "aws.txt"}


# ---- secrets made for local use ---------------------------------------------------------------


def test_a_local_secret_is_made_once_owner_only(tmp_path):
    settings = TokenSection(data_dir=str(tmp_path / "data"))
    first = jwt_secret(settings)
    folder = tmp_path / "data" / "secrets"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "jwt-secret").stat().st_mode) == 0o600
    assert len(first.encode()) >= 32 and jwt_secret(settings) == first
    assert sorted(p.name for p in folder.iterdir()) == ["jwt-secret"], "no draft is left behind"


def _make_secret(data_dir: str) -> str:
    return local_secret(data_dir, "shared", lambda: secrets.token_urlsafe(48))


def test_processes_starting_together_get_the_same_secret(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as workers:
        values = workers.map(_make_secret, [str(tmp_path)] * 24)
    assert len(set(values)) == 1 and len(values[0]) == 64
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == ["shared"]


def test_a_secret_others_may_read_is_refused(tmp_path):
    settings = TokenSection(data_dir=str(tmp_path))
    secret = jwt_secret(settings)
    path = tmp_path / "secrets" / "jwt-secret"
    path.chmod(0o644)
    with pytest.raises(InsecureSecretError, match="may be read by others"):
        jwt_secret(settings)
    assert path.read_text() == secret, "refused, not replaced"
    path.chmod(0o600)
    (tmp_path / "secrets").chmod(0o755)
    with pytest.raises(InsecureSecretError, match="may be read by others"):
        jwt_secret(settings)


def test_a_secret_behind_a_symlink_is_refused(tmp_path):
    (tmp_path / "secrets").mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(secrets.token_urlsafe(48))
    elsewhere.chmod(0o600)
    (tmp_path / "secrets" / "jwt-secret").symlink_to(elsewhere)
    with pytest.raises(OSError):
        jwt_secret(TokenSection(data_dir=str(tmp_path)))


# ---- 32 bytes at least ------------------------------------------------------------------------

SHORT = "fake-31-byte-secret-0123456789a"
LONG_ENOUGH = "fake-32-byte-secret-0123456789ab"


def test_secrets_shorter_than_32_bytes_are_refused():
    assert len(SHORT.encode()) == 31 and len(LONG_ENOUGH.encode()) == 32
    with pytest.raises(InsecureSecretError, match="SWITCHBOARD_JWT_SECRET is 31 bytes"):
        jwt_secret(TokenSection(jwt_secret=SHORT))
    with pytest.raises(InsecureSecretError, match="SWITCHBOARD_SIGNING_SECRET is 31 bytes"):
        signing_secret(backend_settings(jwt_secret=LONG_ENOUGH, signing_secret=SHORT))
    with pytest.raises(InsecureSecretError):
        mint_token(TokenSection(jwt_secret=SHORT), sub="u", roles=["sre"], sites="*")
    assert jwt_secret(TokenSection(jwt_secret=LONG_ENOUGH)) == LONG_ENOUGH


@pytest.mark.parametrize("secrets_set", [{"jwt_secret": SHORT},
                                         {"jwt_secret": LONG_ENOUGH, "signing_secret": SHORT},
                                         {"signing_secret": LONG_ENOUGH, "jwt_secret": SHORT}])
def test_the_backend_refuses_to_start_with_a_short_secret(secrets_set):
    with pytest.raises(SystemExit, match=r"backend not started: SWITCHBOARD_.*_SECRET is 31 bytes"):
        create_app(backend_settings(database_url="postgresql://unused", nats_url="nats://unused",
                                    **secrets_set))
    assert create_app(backend_settings(database_url="postgresql://unused", nats_url="nats://unused",
                               jwt_secret=LONG_ENOUGH)).plugins


def _token_command(secret: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWITCHBOARD_JWT_SECRET": secret, "SWITCHBOARD_DATA_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "tools.cli", "token", "--role", "sre", "--site", "*"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def test_switchboard_token_refuses_a_short_secret(tmp_path):
    refused = _token_command(SHORT, tmp_path)
    assert refused.returncode != 0 and refused.stdout == ""
    assert "token not minted: SWITCHBOARD_JWT_SECRET is 31 bytes" in refused.stderr
    minted = _token_command(LONG_ENOUGH, tmp_path)
    assert minted.returncode == 0 and minted.stdout.count(".") == 2, minted.stderr
