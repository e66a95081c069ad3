"""Reading a backend list a page at a time, newest first: Older goes on by the backend's cursor, Newer goes
back. The filters are those of the search that read the first page, so that a field changed since, but
not searched, never mixes into the pages of the search on screen."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import ui

from dashboard.coalesce import LatestRead


class Pages:
    def __init__(self, show: Callable[[], Awaitable[None]]) -> None:
        self.show = show  # reads `params()` with `cursor()` and draws the page
        self.filters: dict[str, Any] = {}
        self.cursors: list[str | None] = [None]  # the cursor of each page read so far, the shown one last
        self.latest = LatestRead()  # a search pressed while the page's first read runs: the search shows

    async def first(self, filters: dict[str, Any]) -> None:
        self.filters, self.cursors = filters, [None]
        await self.show()

    def params(self) -> dict[str, Any]:
        cursor = self.cursors[-1]
        return {**self.filters, **({"cursor": cursor} if cursor else {})}

    @property
    def number(self) -> int:
        return len(self.cursors)

    async def older(self, cursor: str) -> None:
        self.cursors.append(cursor)
        await self.show()

    async def newer(self) -> None:
        self.cursors.pop()
        await self.show()

    def buttons(self, next_cursor: str | None) -> None:
        """Newer and Older under the page shown, where there is such a page, with its number."""
        if self.number == 1 and not next_cursor:
            return
        with ui.row().classes("items-center gap-4").props("data-testid=pages"):
            if self.number > 1:
                ui.button("Newer", on_click=self.newer).props("outline")
            ui.label(f"Page {self.number}").classes("text-sm text-gray-600")
            if next_cursor:
                ui.button("Older", on_click=lambda: self.older(next_cursor)).props("outline")
