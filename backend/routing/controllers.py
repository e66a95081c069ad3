from __future__ import annotations

from pathlib import Path

from litestar import Controller, get

from backend.auth import READ
from backend.resources import AppResources
from backend.routing.schemas import RulesInForce


class RuleController(Controller):
    path = "/api/v1/rules"
    tags = ["routing"]

    @get("/", opt=READ, operation_id="listRules")
    async def list_rules(self, resources: AppResources) -> RulesInForce:
        rules = resources.rules
        return RulesInForce(file=Path(rules.path).name, version=rules.version, items=list(rules.rules))
