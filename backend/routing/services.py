"""The rules in force with what each produced today, and the ownership map beside them."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import msgspec

from backend.reconciliation.ownership import OWNERSHIP
from backend.routing.rules import RuleSet
from backend.routing.schemas import RuleInForce, RulesInForce, SystemOwnership


async def rules_in_force(conn: asyncpg.Connection, rules: RuleSet, sites: list[str] | None) -> RulesInForce:
    rows = await conn.fetch(
        "SELECT rule, count(*) AS n FROM commands"
        " WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
        " AND ($1::text[] IS NULL OR site = ANY($1)) GROUP BY rule", sites)
    produced = {r["rule"]: r["n"] for r in rows}
    items = [RuleInForce(**msgspec.structs.asdict(rule), produced_today=produced.get(rule.name, 0))
             for rule in rules.rules]
    ownership = [SystemOwnership(system=system, stages=sorted(owned.stages), fields=list(owned.fields))
                 for system, owned in sorted(OWNERSHIP.items())]
    return RulesInForce(file=Path(rules.path).name, version=rules.version, items=items, ownership=ownership)
