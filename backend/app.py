"""The app factory: `uvicorn --factory backend.app:create_app`."""

from __future__ import annotations

from litestar import Litestar

from backend.plugin import SwitchboardPlugin
from switchboard.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> Litestar:
    return Litestar(plugins=[SwitchboardPlugin(settings or get_settings())])
