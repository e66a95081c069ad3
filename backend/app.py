"""The app factory: `uvicorn --factory backend.app:create_app`."""

from __future__ import annotations

from litestar import Litestar

from backend.plugin import SwitchboardPlugin
from switchboard.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> Litestar:
    # logging_config=None: Litestar's default would replace the root handler; ours (switchboard/logs.py)
    # writes scrubbed JSON lines and is set up by the CLI before the app starts
    return Litestar(plugins=[SwitchboardPlugin(settings or get_settings())], logging_config=None)
