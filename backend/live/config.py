"""The live websocket's settings section."""

from __future__ import annotations

import msgspec


class LiveSection(msgspec.Struct, frozen=True, kw_only=True):
    # browser origins besides our own whose pages may open the websocket
    allowed_origins: tuple[str, ...] = ()
