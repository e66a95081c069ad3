"""A dashboard in this test process against the session's real backend, driven by NiceGUI's simulated user."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from switchboard.settings import Settings
from tests.support.backends import start_backend
from tests.support.board import Board, simulated_board
from tools.backend_process import BackendProcess


@pytest.fixture
async def board(backend: BackendProcess, settings: Settings) -> AsyncIterator[Board]:
    async with simulated_board(msgspec.structs.replace(settings, backend_url=backend.url)) as board:
        yield board


@pytest.fixture
def own_backend(settings: Settings, workdir: Path) -> Iterator[BackendProcess]:
    """A backend of the test's own, for tests that stop it."""
    process = start_backend(settings, workdir / f"backend-{uuid.uuid4().hex[:8]}.log")
    yield process
    process.stop()


