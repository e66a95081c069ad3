"""Switchboard's own events (sources `/switchboard` and `/manual/<user>`).

`switchboard` and `manual` are reserved systems (RESERVED_SYSTEMS): only the backend may publish as them
(reconciliation's corrective events, manual steps of a fallback). A backend signs each of its own events
with an HMAC of the message body in a header; the apply side accepts an event from a reserved system only
with a valid signature, so a client on NATS (or a caller of the HTTP ingest) can never pass one off. The
key derives from the signing secret every replica shares (`backend.auth.signing_secret`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING

import msgspec
from nats.js import JetStreamContext

from backend.auth import signing_secret
from switchboard.events import CloudEvent, nats_msg_id, nats_subject

if TYPE_CHECKING:
    from backend.settings import BackendSettings

SIGNATURE_HEADER = "Switchboard-Signature"


def signing_key(settings: BackendSettings) -> bytes:
    return hmac.new(signing_secret(settings).encode(), b"switchboard own events v1", hashlib.sha256).digest()


def sign(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def is_signed(key: bytes, body: bytes, headers: Mapping[str, str] | None) -> bool:
    given = (headers or {}).get(SIGNATURE_HEADER)
    # as bytes: compare_digest refuses a str that is not ASCII, and a header can hold anything
    return given is not None and hmac.compare_digest(given.encode(), sign(key, body).encode())


async def publish(js: JetStreamContext, key: bytes, event: CloudEvent) -> None:
    """Publish one of the backend's own events, signed; the message id makes a re-publish harmless."""
    body = msgspec.json.encode(event)
    await js.publish(nats_subject(event), body,
                     headers={"Nats-Msg-Id": nats_msg_id(event.source, event.id),
                              SIGNATURE_HEADER: sign(key, body)})
