"""Alerts in Postgres: raised once per rule and subject (the partial unique index of sql/013), resolved
once, acknowledged once; each raise and resolve queues one delivery per webhook in the same transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit

import asyncpg
import msgspec

from backend.alerts.conditions import Firing
from backend.alerts.rules import Rule
from backend.alerts.schemas import (
    Alert,
    AlertDelivery,
    AlertRuleState,
    AlertWebhook,
    StatusFilter,
    WebhookEvent,
)

_encode = msgspec.json.encode


def _alert(row: asyncpg.Record) -> Alert:
    return Alert(id=row["id"], rule=row["rule"], kind=row["kind"], subject=row["subject"], site=row["site"],
                 status=row["status"], summary=row["summary"], value=row["value"], threshold=row["threshold"],
                 raised_at=row["raised_at"], acked_at=row["acked_at"], acked_by=row["acked_by"],
                 resolved_at=row["resolved_at"])


async def held_since(conn: asyncpg.Connection, rule: Rule, found: list[Firing]) -> dict[str, datetime]:
    """When each subject's condition began: its own `since`, or when it was first seen (kept in
    `alert_pending`, shared by the replicas); subjects no longer firing are forgotten."""
    subjects = [f.subject for f in found]
    await conn.execute("DELETE FROM alert_pending WHERE rule = $1 AND NOT EXISTS (SELECT 1 FROM unnest("
                       "$2::text[]) AS firing (subject) WHERE firing.subject = alert_pending.subject)",
                       rule.name, subjects)
    unknown = [f.subject for f in found if f.since is None]
    seen = {r["subject"]: r["since"] for r in await conn.fetch(
        "INSERT INTO alert_pending (rule, subject) SELECT $1, unnest($2::text[])"
        " ON CONFLICT (rule, subject) DO UPDATE SET since = alert_pending.since RETURNING subject, since",
        rule.name, unknown)} if unknown else {}
    return {f.subject: f.since or seen[f.subject] for f in found}


async def raise_alert(conn: asyncpg.Connection, rule: Rule, found: Firing,
                      webhooks: Iterable[str]) -> Alert | None:
    """The new alert, or None when this rule's alert for the subject is open already (here or raised by
    another replica meanwhile)."""
    row = await conn.fetchrow(
        "INSERT INTO alerts (rule, kind, subject, site, summary, value, threshold)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (rule, subject) WHERE status IN ('open', 'acknowledged') DO NOTHING RETURNING *",
        rule.name, type(rule).__struct_config__.tag, found.subject, found.site, found.summary, found.value,
        found.threshold)
    if row is None:
        return None
    alert = _alert(row)
    await _queue_deliveries(conn, alert, "alert.raised", webhooks)
    return alert


async def resolve_cleared(conn: asyncpg.Connection, still: Iterable[tuple[str, str]],
                          webhooks: Iterable[str]) -> list[Alert]:
    """Resolve every unresolved alert whose (rule, subject) is no longer firing (or whose rule is gone)."""
    rules, subjects = zip(*still, strict=True) if still else ((), ())
    rows = await conn.fetch(
        "UPDATE alerts SET status = 'resolved', resolved_at = now() WHERE status IN ('open', 'acknowledged')"
        " AND (rule, subject) NOT IN (SELECT * FROM unnest($1::text[], $2::text[])) RETURNING *",
        list(rules), list(subjects))
    resolved = [_alert(r) for r in rows]
    webhooks = list(webhooks)
    for alert in resolved:
        await _queue_deliveries(conn, alert, "alert.resolved", webhooks)
    return resolved


async def _queue_deliveries(conn: asyncpg.Connection, alert: Alert, event: WebhookEvent,
                            webhooks: Iterable[str]) -> None:
    urls = list(webhooks)
    if not urls:
        return
    payload = _encode(AlertWebhook(type=event, timestamp=alert.resolved_at or alert.raised_at, data=alert))
    await conn.execute(
        "INSERT INTO alert_deliveries (alert_id, event, receiver, target, payload)"
        " SELECT $1, $2, unnest($3::text[]), unnest($4::text[]), $5::jsonb ON CONFLICT DO NOTHING",
        alert.id, event, [receiver_digest(u) for u in urls], [shown_target(u) for u in urls],
        payload.decode())


def receiver_digest(url: str) -> str:
    """What a delivery keeps of its receiver: its URL may be its secret, so never the URL itself."""
    return "sha256:" + hashlib.sha256(url.encode()).hexdigest()


async def acknowledge(conn: asyncpg.Connection, alert_id: int, actor: str) -> Alert | None:
    row = await conn.fetchrow(
        "UPDATE alerts SET status = 'acknowledged', acked_at = now(), acked_by = $2 WHERE id = $1"
        " AND status = 'open' RETURNING *", alert_id, actor)
    return None if row is None else _alert(row)


async def get_alert(conn: asyncpg.Connection, alert_id: int) -> Alert | None:
    row = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", alert_id)
    return None if row is None else _alert(row)


def _statuses(status: StatusFilter | None) -> list[str] | None:
    if status == "active":
        return ["open", "acknowledged"]
    return None if status is None else [status]


async def list_alerts(conn: asyncpg.Connection, *, sites: list[str] | None, status: StatusFilter | None,
                      limit: int, cursor: int | None) -> list[Alert]:
    """Newest first. A scoped reader sees its sites' alerts and those concerning every site."""
    rows = await conn.fetch(
        "SELECT * FROM alerts WHERE ($1::text[] IS NULL OR site IS NULL OR site = ANY($1))"
        " AND ($2::text[] IS NULL OR status = ANY($2)) AND ($3::bigint IS NULL OR id < $3)"
        " ORDER BY id DESC LIMIT $4", sites, _statuses(status), cursor, limit)
    return [_alert(r) for r in rows]


async def snapshot(conn: asyncpg.Connection, sites: list[str] | None) -> list[Alert]:
    """The live topic's snapshot: the active alerts a reader may see."""
    return await list_alerts(conn, sites=sites, status="active", limit=500, cursor=None)


async def counts(conn: asyncpg.Connection) -> tuple[dict[str, int], int]:
    """Active alerts per rule, and deliveries waiting: for /metrics."""
    active = {r["rule"]: r["n"] for r in await conn.fetch(
        "SELECT rule, count(*) AS n FROM alerts WHERE status IN ('open', 'acknowledged') GROUP BY rule")}
    pending = await conn.fetchval("SELECT count(*) FROM alert_deliveries WHERE status = 'pending'")
    return active, int(pending)


def shown_target(url: str) -> str:
    """A receiver's URL without what may be a credential: user info, query, fragment and path (a chat
    service's incoming webhook is a secret path)."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}" + ("/…" if parts.path.strip("/") else "")


async def deliveries(conn: asyncpg.Connection, alert_id: int) -> list[AlertDelivery]:
    rows = await conn.fetch("SELECT * FROM alert_deliveries WHERE alert_id = $1 ORDER BY id", alert_id)
    return [AlertDelivery(event=r["event"], target=r["target"], status=r["status"],
                          attempts=r["attempts"], last_error=r["last_error"],
                          next_at=r["next_at"] if r["status"] == "pending" else None,
                          delivered_at=r["delivered_at"]) for r in rows]


async def rule_states(conn: asyncpg.Connection, rules: Iterable[Rule],
                      sites: list[str] | None) -> list[AlertRuleState]:
    active = {r["rule"]: r["n"] for r in await conn.fetch(
        "SELECT rule, count(*) AS n FROM alerts WHERE status IN ('open', 'acknowledged')"
        " AND ($1::text[] IS NULL OR site IS NULL OR site = ANY($1)) GROUP BY rule", sites)}
    return [AlertRuleState(name=rule.name, kind=type(rule).__struct_config__.tag,  # type: ignore[arg-type]
                           settings={k: v for k, v in msgspec.structs.asdict(rule).items() if k != "name"},
                           active=active.get(rule.name, 0)) for rule in rules]
