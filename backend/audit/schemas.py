from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class AuditEntry(msgspec.Struct, kw_only=True):
    id: int
    at: datetime
    actor: str
    roles: list[str]
    action: str
    target: str
    # the site the action concerns; None: no one site
    site: str | None = None
    reason: str | None
    result: Any


class AuditPage(msgspec.Struct):
    items: list[AuditEntry]
    next_cursor: str | None
