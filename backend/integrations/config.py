"""The integrations' settings section: connector health and recovery pacing."""

from __future__ import annotations

import msgspec


class IntegrationsSection(msgspec.Struct, frozen=True, kw_only=True):
    # a connector silent for three intervals counts as down
    heartbeat_interval_s: float = 15.0
    # integration health is re-decided this often (every replica; a change is published once)
    integration_check_interval_s: float = 2.0
    # and its figures (events/min, latency...) go out on the `integrations` topic this often besides
    integration_figures_interval_s: float = 10.0
    # recovery pacing (docs/fallback.md): commands per minute per system, halved on trouble, raised by
    # `pace_increase_per_s` per trouble-free second, restarting at `pace_start_per_min` after an outage
    pace_min_per_min: float = 6.0
    pace_max_per_min: float = 6000.0
    pace_start_per_min: float = 60.0
    pace_increase_per_s: float = 10.0
    # while a system recovers, commands that reach staff go out at most this often per open counter of the
    # site
    pace_per_counter_per_min: float = 2.0
    pace_staff_commands: tuple[str, ...] = ("staff.alert", "ticket.prioritize", "visit.context")
