"""The running dashboard in a real headless Chromium (Debian's `chromium`): starting it, signing in."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.async_api import Locator, Page, expect

from backend.settings import BackendSettings
from tests.support.backends import backend_env
from tools.backend_process import BackendProcess
from tools.embedded import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# the pictures the documentation shows, kept in the repository
DOC_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


async def target_size(target: Locator) -> tuple[float, float]:
    """The width and height of what a finger taps, measured in the page once it is shown: `bounding_box()`
    answers None at once for one its list is drawing again, and an element attached but not laid out yet
    measures 0 (a test failed on each)."""
    await expect(target).to_be_visible(timeout=15_000)
    width, height = await target.evaluate("element => [element.getBoundingClientRect().width,"
                                          " element.getBoundingClientRect().height]")
    return width, height


async def document(page: Page, name: str) -> None:
    """The page as the documentation shows it (`docs/screenshots/<name>`), once its toasts are gone."""
    await expect(page.locator(".q-notification")).to_have_count(0, timeout=15_000)
    DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=DOC_SCREENSHOTS / name, full_page=True)


@contextmanager
def running_dashboard(backend: BackendProcess, settings: BackendSettings, log_path: Path,
                      extra_env: dict[str, str] | None = None, *, demo: bool = True) -> Iterator[str]:
    """`switchboard dashboard [--demo]` on a free port, talking to `backend`; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**backend_env(settings), "SWITCHBOARD_BACKEND_URL": backend.url, **(extra_env or {})}
    env.pop("PYTEST_CURRENT_TEST", None)  # NiceGUI would take the process for a test of its own
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "dashboard", *(["--demo"] if demo else []),
             "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "the dashboard did not start within 60 s"
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                if httpx.get(url + "/signin", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


async def sign_in_as(page: Page, url: str, role: str, sites: str = "*") -> None:
    await page.goto(url + "/signin")
    await page.get_by_test_id("demo-role").click()
    await page.get_by_role("option", name=role, exact=True).click()
    await page.get_by_test_id("demo-site").fill(sites)
    await page.get_by_test_id("demo-enter").click()
    await expect(page.get_by_test_id("who")).to_contain_text(f"demo-{role}")
