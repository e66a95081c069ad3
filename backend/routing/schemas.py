from __future__ import annotations

import msgspec

from backend.routing.rules import Rule


class RuleInForce(Rule, kw_only=True):
    # commands this rule produced since midnight UTC, for the caller's sites
    produced_today: int


class SystemOwnership(msgspec.Struct, kw_only=True):
    """What a system is the record for: the stages it moves a journey to and the fields it owns."""

    system: str
    stages: list[str]
    fields: list[str]


class RulesInForce(msgspec.Struct, kw_only=True):
    file: str
    version: int
    items: list[RuleInForce]
    ownership: list[SystemOwnership]
