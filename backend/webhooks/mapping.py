"""An upstream's webhook payload, mapped to one canonical event (CONTRACT section 2).

Two shapes are accepted. A CloudEvent (it has `specversion`) passes as it is. Otherwise the
Standard Webhooks payload shape, `{"type", "timestamp", "data"}`, where `type` is a catalogue
type and `data.ref` the system's external id:

    {"type": "ticket.called", "timestamp": "2026-05-04T09:30:00Z",
     "data": {"ref": "T-0042", "site": "north", "counter": "C3"}}

becomes an event from `/<system>` about `<system>:T-0042`, with the `webhook-id` as its id (unique
per sender, so the same delivery always maps to the same event). Either way the result then goes
through the same validation as every other inbound event.
"""

from __future__ import annotations

from typing import Any

import msgspec


def to_canonical(system: str, webhook_id: str, body: bytes) -> bytes:
    """The canonical event's bytes; what cannot be mapped is left for validation to refuse with a reason."""
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):  # nested past msgspec's depth: validation says so
        return body
    if not isinstance(doc, dict) or "specversion" in doc:
        return body
    data: Any = doc.get("data")
    if not isinstance(data, dict):
        return body
    data = dict(data)
    ref = data.pop("ref", None)
    subject = (ref if ":" in ref else f"{system}:{ref}") if isinstance(ref, str) else None
    return msgspec.json.encode({
        "specversion": "1.0", "id": webhook_id, "source": f"/{system}", "type": doc.get("type"),
        "time": doc.get("timestamp"), "datacontenttype": "application/json", "data": data,
        **({"subject": subject} if subject else {}),
    })
