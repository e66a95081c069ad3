from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

AlertStatus = Literal["open", "acknowledged", "resolved"]
# `active`: open or acknowledged, what a banner shows
StatusFilter = Literal["open", "acknowledged", "resolved", "active"]
WebhookEvent = Literal["alert.raised", "alert.resolved"]


class Alert(msgspec.Struct, kw_only=True):
    id: int
    rule: str
    kind: str
    subject: str
    site: str | None  # None: concerns every site
    status: AlertStatus
    summary: str
    value: float
    threshold: float
    raised_at: datetime
    acked_at: datetime | None
    acked_by: str | None
    resolved_at: datetime | None


class AlertPage(msgspec.Struct, kw_only=True):
    items: list[Alert]
    next_cursor: str | None


class AckRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    note: Annotated[str, Meta(max_length=500)] | None = None


class AlertWebhook(msgspec.Struct, kw_only=True):
    """The body of a delivery, as Standard Webhooks suggests: a type, a timestamp and the data."""

    type: WebhookEvent
    timestamp: datetime
    data: Alert


class AlertDelivery(msgspec.Struct, kw_only=True):
    """One webhook of one alert event, as Svix shows a message's attempts: where (without credentials or
    query), how far, and why it last failed."""

    event: WebhookEvent
    target: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    next_at: datetime | None  # when pending: the next attempt
    delivered_at: datetime | None


class AlertDeliveryList(msgspec.Struct):
    items: list[AlertDelivery]


class AlertRuleState(msgspec.Struct, kw_only=True):
    """A configured rule as Grafana lists them: what it watches, its settings, and how many of its alerts
    are active for the reader's sites."""

    name: str
    kind: str
    settings: dict[str, float]
    active: int


class AlertRuleList(msgspec.Struct):
    items: list[AlertRuleState]
