"""The fallbacks' settings section."""

from __future__ import annotations

import msgspec


class FallbacksSection(msgspec.Struct, frozen=True, kw_only=True):
    # a manual action answers once its event is applied, or says it is still on its way after this long
    manual_apply_timeout_s: float = 10.0
