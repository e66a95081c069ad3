"""Events as connectors and the backend make them, and publishing them onto JetStream."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import nats

from backend.ingest.own_events import SIGNATURE_HEADER, sign, signing_key
from backend.settings import BackendSettings


def cloud_event(type_: str, subject: str, data: dict[str, Any], *, source: str | None = None,
                time: datetime | None = None, id: str | None = None) -> dict[str, Any]:  # noqa: A002
    system = subject.split(":", 1)[0]
    return {
        "specversion": "1.0", "id": id or uuid.uuid4().hex, "source": source or f"/{system}", "type": type_,
        "subject": subject, "time": (time or datetime.now(UTC)).isoformat(), "data": data,
    }


async def publish(js: nats.js.JetStreamContext, event: dict[str, Any] | bytes,
                  subject: str | None = None) -> None:
    """Publish as a connector does; raw bytes (for malformed input) need an explicit subject."""
    if isinstance(event, bytes):
        assert subject is not None
        await js.publish(subject, event)
        return
    system = event["source"].split("/")[1]
    await js.publish(subject or f"svc.events.{system}.{event['type']}", msgspec.json.encode(event),
                     headers={"Nats-Msg-Id": f"{event['source']} {event['id']}"})


async def publish_as_backend(js: nats.js.JetStreamContext, settings: BackendSettings,
                             event: dict[str, Any]) -> None:
    """Publish as the backend publishes its own events (`/manual/<user>`, `/switchboard`): signed with
    its key."""
    body = msgspec.json.encode(event)
    await js.publish(f"svc.events.{event['source'].split('/')[1]}.{event['type']}", body,
                     headers={"Nats-Msg-Id": f"{event['source']} {event['id']}",
                              SIGNATURE_HEADER: sign(signing_key(settings), body)})


def phone_booking(ref: str, site: str) -> dict[str, object]:
    slot = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    return cloud_event("appointment.booked", ref, {"site": site, "service": "passport", "channel": "phone",
                                                   "slot_start": slot})
