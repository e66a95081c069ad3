"""The app factory: `uvicorn --factory backend.app:create_app`."""

from __future__ import annotations

import logging
import os

from litestar import Litestar

from backend.plugin import SwitchboardPlugin
from backend.settings import BackendSettings

_WEBSOCKETS_LIBRARY = f"{os.sep}websockets{os.sep}"


class NoWebsocketWireLogs(logging.Filter):
    """The websockets library, at DEBUG, logs each handshake's request line (a browser's `?token=`) and
    every frame's text; neither may reach a log, whatever the level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _WEBSOCKETS_LIBRARY not in record.pathname


def create_app(settings: BackendSettings | None = None) -> Litestar:
    # uvicorn hands the websockets library its own error logger; the library's own logger too
    for name in ("uvicorn.error", "websockets"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoWebsocketWireLogs) for f in logger.filters):
            logger.addFilter(NoWebsocketWireLogs())
    # logging_config=None: Litestar's default would replace the root handler; ours (switchboard/logs.py)
    # writes scrubbed JSON lines and is set up by the CLI before the app starts
    return Litestar(plugins=[SwitchboardPlugin(settings or BackendSettings.from_env())], logging_config=None)
