"""The command delivery settings section (CONTRACT section 3)."""

from __future__ import annotations

import msgspec


class CommandsSection(msgspec.Struct, frozen=True, kw_only=True):
    command_relay_interval_s: float = 0.5
    command_answer_timeout_s: float = 30.0
    command_backoff_s: float = 2.0
    command_backoff_max_s: float = 300.0
    command_max_attempts: int = 5
    # systems commanded per site: each site's commands on a subject and a consumer of their own, which only
    # that site's connector profiles may read; every connector of such a system must be limited to sites
    commands_per_site: tuple[str, ...] = ()
