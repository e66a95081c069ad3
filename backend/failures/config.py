"""The failures' settings section."""

from __future__ import annotations

import msgspec


class FailuresSection(msgspec.Struct, frozen=True, kw_only=True):
    # a second retry of the same failure within this window is the same click, not a new attempt
    retry_debounce_s: float = 5.0
