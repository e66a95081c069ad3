from __future__ import annotations

import msgspec

from backend.routing.rules import Rule


class RulesInForce(msgspec.Struct, kw_only=True):
    file: str
    version: int
    items: list[Rule]
