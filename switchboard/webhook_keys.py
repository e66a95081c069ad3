"""Standard Webhooks signing keys: `whsec_` and the base64 of 24 to 64 bytes, read strictly at start (the
library's own decoding is lenient: it takes `whsec_ab` as a key of one byte, which anyone can guess)."""

from __future__ import annotations

import base64


def check_webhook_key(name: str, secret: str) -> None:
    """Raises ValueError, naming the setting `name`, unless `secret` is a usable key."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError as exc:  # binascii.Error is a ValueError
        raise ValueError(f"{name} is not a Standard Webhooks key: {exc}") from exc
    if not 24 <= len(key) <= 64:
        raise ValueError(f"{name} is a key of {len(key)} bytes: Standard Webhooks keys are 24 to 64 bytes"
                         " (whsec_ and their base64)")
