"""A backend read kept current: read again whenever what it depends on changes on the live topics.

The live topics carry changes, and only the most recent journeys and failures; a page that must show
whoever waits longest, or the failures that touch customers most, reads those from the backend, the one
authority, and lets the live topics say when to read again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

from nicegui import background_tasks

from dashboard.backend_client import BackendError
from dashboard.context import Viewer

# a busy site changes several times a second: a tab reads at most this often
MIN_READ_INTERVAL_S = 1.0


class LiveRead:
    """Reads `path` (with its query): one read at a time, one more after it if something changed meanwhile;
    the tabs of one sign-in that saw the same `version` share one request (`Dashboard.read_once`)."""

    def __init__(self, viewer: Viewer, what: str, show: Callable[[Any], None],
                 fail: Callable[[str], None]) -> None:
        self.viewer, self.what, self.show, self.fail = viewer, what, show, fail
        self.path: str | None = None
        self.version: Callable[[], Hashable] = tuple
        self.seen: Hashable | None = None  # the version at the last read
        self.loading = False
        self.again = False

    def read(self, path: str | None, version: Callable[[], Hashable] = tuple) -> None:
        """Read `path` now, and again whenever `version()` changes; None: read nothing until told."""
        self.path, self.version, self.seen = path, version, None
        if path is not None:
            self.refresh()

    def changed(self) -> None:
        """Read again only when what the read depends on changed (the topics carry every site's)."""
        if self.path is not None and self.version() != self.seen:
            self.refresh()

    def refresh(self) -> None:
        if self.loading:
            self.again = True
            return
        self.loading = True
        background_tasks.create(self._load(), name="live-read")

    async def _load(self) -> None:
        try:
            while self.path is not None:
                self.again = False
                path, self.seen = self.path, self.version()
                try:
                    answer = await self.viewer.dashboard.read_once(self.viewer.token, path, hash(self.seen))
                except BackendError as exc:
                    self.fail(f"{self.what} could not be read: {exc}")
                    return
                if path != self.path:
                    continue  # another read chosen meanwhile: that one at once
                self.show(answer)
                if not self.again:
                    return
                await asyncio.sleep(MIN_READ_INTERVAL_S)
        finally:
            self.loading = False


def site_version(viewer: Viewer, site: str) -> Hashable:
    """What a tab has seen of `site` on the live journeys and fallbacks topics."""
    items = viewer.live.state.items
    return (tuple((k, j["updated_at"]) for k, j in items["journeys"].items() if j["site"] == site),
            tuple((k, f["status"]) for k, f in items["fallbacks"].items() if f["site"] == site))
