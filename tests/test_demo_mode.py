"""Demo mode (anyone signs in as any role, admin included) serves loopback only, and says so at start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dashboard.app import is_loopback
from tests.support.backends import JWT_SECRET
from tools.embedded import free_port


def _dashboard(host: str, port: int, log: Path, *, flag: bool = True) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SWITCHBOARD_JWT_SECRET": JWT_SECRET, "SWITCHBOARD_DATABASE_URL": "",
           "SWITCHBOARD_LOG_FORMAT": "text", "SWITCHBOARD_LOG_LEVEL": "INFO",
           "SWITCHBOARD_DASHBOARD_DEMO": "" if flag else "true"}
    env.pop("PYTEST_CURRENT_TEST", None)  # NiceGUI would take the process for a test of its own
    with open(log, "ab") as out:
        demo = ["--demo"] if flag else []
        return subprocess.Popen([sys.executable, "-m", "tools.cli", "dashboard", *demo, "--host", host,
                                 "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.parametrize(("host", "flag"), [("0.0.0.0", True), ("0.0.0.0", False), ("::", True)],
                         ids=["--demo", "SWITCHBOARD_DASHBOARD_DEMO", "ipv6-any"])
def test_demo_mode_is_refused_off_loopback(tmp_path, host, flag):
    log = tmp_path / "dashboard.log"
    process = _dashboard(host, free_port(), log, flag=flag)
    assert process.wait(timeout=60) != 0
    text = log.read_text()
    assert "dashboard not started: demo mode (anyone may sign in as any role, admin included)" in text
    assert f"serves loopback only (127.0.0.0/8, ::1, localhost), not --host {host}" in text
    assert "demo mode is on" not in text


def test_demo_mode_on_loopback_starts_and_says_so(tmp_path):
    port, log = free_port(), tmp_path / "dashboard.log"
    process = _dashboard("127.0.0.1", port, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the dashboard did not start within 60 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/signin", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        assert f"demo mode is on: anyone reaching 127.0.0.1:{port} may sign in as any role" in log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_loopback_is_127_8_ipv6_one_and_localhost_only():
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "", "10.0.0.1", "localhost.example", "127.0.0.1.nip"]))
