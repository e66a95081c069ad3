"""A dashboard in the test process, driven by NiceGUI's simulated user."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import httpx
import msgspec
from nicegui import core, ui
from nicegui.functions.download import download
from nicegui.functions.navigate import Navigate
from nicegui.functions.notify import notify
from nicegui.testing.general import nicegui_reset_globals
from nicegui.testing.user import User

from dashboard.app import build
from dashboard.context import Dashboard
from dashboard.settings import DashboardSettings


class Board(msgspec.Struct):
    user: User
    dashboard: Dashboard

    async def sign_in(self, token: str) -> None:
        await self.user.open("/signin")
        self.user.find(ui.textarea).type(token)
        self.user.find("Sign in").click()
        await self.user.should_see("Latest journey changes", retries=100)


@contextlib.asynccontextmanager
async def simulated_board(board_settings: DashboardSettings) -> AsyncIterator[Board]:
    with nicegui_reset_globals():
        os.environ["NICEGUI_USER_SIMULATION"] = "true"
        try:
            dashboard = build(board_settings, demo=True)
            ui.run(storage_secret="fake storage secret", show_welcome_message=False)
            async with (core.app.router.lifespan_context(core.app),
                        httpx.AsyncClient(transport=httpx.ASGITransport(core.app),
                                          base_url="http://test") as client):
                yield Board(User(client), dashboard)
        finally:
            os.environ.pop("NICEGUI_USER_SIMULATION", None)
            ui.navigate = Navigate()
            ui.notify = notify
            ui.download = download
