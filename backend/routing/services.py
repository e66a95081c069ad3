"""The rules in force with what each produced today, and the ownership map beside them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import asyncpg
import msgspec

from backend.reconciliation.ownership import OWNERSHIP
from backend.routing.rules import RuleSet
from backend.routing.schemas import RuleInForce, RulesInForce, SystemOwnership
from backend.sites.config import SiteDirectory


def _day_starts(directory: SiteDirectory, sites: list[str] | None, now: datetime) -> dict[str, datetime]:
    """Where today began at each site the file names (or each of `sites`), and, under "", at any other."""
    named = directory.configured if sites is None else sites
    return {"": directory.default.today_began(now)} | {site: directory.get(site).today_began(now)
                                                        for site in named}


async def rules_in_force(conn: asyncpg.Connection, rules: RuleSet, sites: list[str] | None,
                         directory: SiteDirectory, now: datetime) -> RulesInForce:
    """Each rule with the commands it produced today: since midnight in each site's own time zone."""
    starts = _day_starts(directory, sites, now)
    rows = await conn.fetch(
        "SELECT c.rule, count(*) AS n FROM commands c"
        " LEFT JOIN unnest($2::text[], $3::timestamptz[]) AS s(site, day_start) ON s.site = c.site"
        " WHERE c.created_at >= $4 AND c.created_at >= coalesce(s.day_start, $5)"
        " AND ($1::text[] IS NULL OR c.site = ANY($1)) GROUP BY c.rule",
        sites, list(starts), list(starts.values()), min(starts.values()), starts[""])
    produced = {r["rule"]: r["n"] for r in rows}
    items = [RuleInForce(**msgspec.structs.asdict(rule), produced_today=produced.get(rule.name, 0))
             for rule in rules.rules]
    ownership = [SystemOwnership(system=system, stages=sorted(owned.stages), fields=list(owned.fields))
                 for system, owned in sorted(OWNERSHIP.items())]
    return RulesInForce(file=Path(rules.path).name, version=rules.version, items=items, ownership=ownership)
