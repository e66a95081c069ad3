"""A dashboard in this test process against the session's real backend, driven by NiceGUI's simulated user;
and the real one in a real headless Chromium for the browser tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nicegui.client import Client
from nicegui.testing.general import nicegui_reset_globals
from playwright.async_api import Browser, async_playwright

from backend.settings import BackendSettings
from dashboard.app import build
from tests.support.axe import fetch_axe
from tests.support.backends import start_backend
from tests.support.board import Board, simulated_board
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, running_dashboard
from tests.support.settings import dashboard_settings
from tools.backend_process import BackendProcess


@pytest.fixture
async def board(backend: BackendProcess, settings: BackendSettings) -> AsyncIterator[Board]:
    async with simulated_board(dashboard_settings(settings.tokens, backend_url=backend.url)) as board:
        yield board


@pytest.fixture
def own_backend(settings: BackendSettings, workdir: Path) -> Iterator[BackendProcess]:
    """A backend of the test's own, for tests that stop it."""
    process = start_backend(settings, workdir / f"backend-{uuid.uuid4().hex[:8]}.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dashboard_url(backend: BackendProcess, settings: BackendSettings, workdir: Path) -> Iterator[str]:
    with running_dashboard(backend, settings, workdir / "dashboard.log") as url:
        yield url


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture(scope="session")
def axe_source(workdir: Path) -> str:
    """axe-core from the npm registry, fetched once per session."""
    return fetch_axe(workdir / "axe-core")


@pytest.fixture(scope="session")
def board_routes(settings: BackendSettings) -> list[str]:
    """Every page path the dashboard registers, read from NiceGUI's routes after building it, so a page
    added later is covered without naming it here."""
    with nicegui_reset_globals():
        build(dashboard_settings(settings.tokens), demo=True)
        return sorted(set(Client.page_routes.values()))
