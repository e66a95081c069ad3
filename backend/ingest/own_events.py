"""Switchboard's own events (source `/switchboard`, e.g. reconciliation's corrective events).

`switchboard` is a reserved system: only the backend may publish as it. A backend signs each of
its own events with an HMAC of the message body in a header; the apply side accepts an event from
`/switchboard` only with a valid signature, so a connector on NATS (or a caller of the HTTP ingest)
can never pass one off. The key derives from the JWT secret every replica already shares.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from backend.auth import jwt_secret
from switchboard.settings import Settings

OWN_SYSTEM = "switchboard"
SIGNATURE_HEADER = "Switchboard-Signature"


def signing_key(settings: Settings) -> bytes:
    return hmac.new(jwt_secret(settings).encode(), b"switchboard own events v1", hashlib.sha256).digest()


def sign(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def is_signed(key: bytes, body: bytes, headers: Mapping[str, str] | None) -> bool:
    given = (headers or {}).get(SIGNATURE_HEADER)
    return given is not None and hmac.compare_digest(given, sign(key, body))
