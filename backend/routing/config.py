"""The routing settings section."""

from __future__ import annotations

import msgspec


class RoutingSection(msgspec.Struct, frozen=True, kw_only=True):
    # the routing rules (CONTRACT section 3); empty: the packaged v1 rules
    rules_file: str = ""
