"""Opaque keyset cursors: the sort key of the last item of a page."""

from __future__ import annotations

import base64
from typing import Any

import msgspec
from litestar.exceptions import ValidationException


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = msgspec.json.decode(raw, type=tuple[*types])  # type: ignore[valid-type]
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValidationException("cursor is not one this API issued") from exc
    return values
