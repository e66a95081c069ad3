"""A real `switchboard backend` child process on a free port: for tests, benchmarks and chaos runs."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tools.embedded import free_port


class BackendProcess:
    def __init__(self, env: dict[str, str], log_path: Path, *, cwd: Path | None = None) -> None:
        """`cwd`: the checkout whose `switchboard backend` runs (by default this one)."""
        self.env, self.log_path, self.cwd = env, log_path, cwd
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BackendProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", "backend", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd)
        return self

    def ready(self) -> bool:
        with contextlib.suppress(OSError), \
                urllib.request.urlopen(self.url + "/ready", timeout=1) as response:  # noqa: S310 - loopback
            return response.status == 200
        return False

    def wait_ready(self, timeout: float = 60.0) -> BackendProcess:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"backend exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"backend not ready within {timeout:.0f}s")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops it; a backend that takes more than 20s is a bug."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the backend did not stop within 20s of SIGTERM") from None
