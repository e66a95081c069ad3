"""A site's floor read from the backend, and read again whenever the live topics show a change there.

The backend's floor is the one authority on who is at a site and in which order the queue serves them:
the live journeys topic holds only the most recent journeys, not whoever has waited longest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nicegui import background_tasks

from dashboard.backend_client import BackendError
from dashboard.context import Viewer

FLOOR = "/api/v1/sites/{site}/floor"
# a busy site changes several times a second: a tab reads its floor at most this often
MIN_READ_INTERVAL_S = 1.0


class FloorReader:
    """Reads the floor of `site`: one read at a time, one more after it if something changed meanwhile;
    the tabs of one sign-in that saw the same changes share one request (`Dashboard.read_once`)."""

    def __init__(self, viewer: Viewer, show: Callable[[dict[str, Any]], None],
                 fail: Callable[[str], None]) -> None:
        self.viewer, self.show, self.fail = viewer, show, fail
        self.site: str | None = None
        self.seen: tuple[Any, ...] | None = None  # the site's journeys in the live state at the last read
        self.loading = False
        self.again = False

    def read(self, site: str | None) -> None:
        """Read `site`'s floor now (a site chosen, or a page built); None: read none until told."""
        self.site, self.seen = site, None
        if site is not None:
            self.refresh()

    def changed(self) -> None:
        """Read again only when a journey or fallback of the site changed (the topics carry every site's)."""
        if self.site is not None and self.version() != self.seen:
            self.refresh()

    def version(self) -> tuple[Any, ...]:
        """What this tab has seen of the site on the live topics; tabs that saw the same share one read."""
        items = self.viewer.live.state.items
        return (tuple((k, j["updated_at"]) for k, j in items["journeys"].items() if j["site"] == self.site),
                tuple((k, f["status"]) for k, f in items["fallbacks"].items() if f["site"] == self.site))

    def refresh(self) -> None:
        if self.loading:
            self.again = True
            return
        self.loading = True
        background_tasks.create(self._load(), name="floor-read")

    async def _load(self) -> None:
        try:
            while self.site is not None:
                self.again = False
                site, self.seen = self.site, self.version()
                try:
                    floor = await self.viewer.dashboard.read_once(
                        self.viewer.token, FLOOR.format(site=site), hash(self.seen))
                except BackendError as exc:
                    self.fail(f"The floor could not be read: {exc}")
                    return
                if site == self.site:  # not another site chosen meanwhile
                    self.show(floor)
                if not self.again:
                    return
                await asyncio.sleep(MIN_READ_INTERVAL_S)
        finally:
            self.loading = False
