"""Opaque keyset cursors: the sort key of the last item of a page."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol, TypeVar

import msgspec
from litestar.exceptions import ValidationException
from litestar.params import PathParameter, QueryParameter

BIGINT = 2**63  # Postgres bigint: ids and cursors beyond it are not ours, and asyncpg could not send them
# a bigint id in a path (`{failure_id:int}`): anything else is a 400, not a database error
BigintId = Annotated[int, PathParameter(ge=1, le=BIGINT - 1)]
# how many items one page of a list may ask for
PageLimit = Annotated[int, QueryParameter(ge=1, le=500)]


class _ById(Protocol):
    @property
    def id(self) -> int: ...


ById = TypeVar("ById", bound=_ById)


def id_page(items: list[ById], limit: int) -> tuple[list[ById], str | None]:
    """The first `limit` of `items` (read as `limit + 1`: one more only says there is a next page) and the
    cursor of that next page, keyed by the last id shown."""
    return items[:limit], encode_cursor(items[limit - 1].id) if len(items) > limit else None


def _sendable(moment: datetime) -> bool:
    """asyncpg sends a time in UTC: one that falls outside years 1 to 9999 there cannot be sent."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


def query_time(name: str, moment: datetime | None) -> datetime | None:
    """A time given to filter by, refused (400) where it could not even be compared with a stored one."""
    if moment is not None and not _sendable(moment):
        raise ValidationException(f"{name} is outside the years 1 to 9999 in UTC")
    return moment


def encode_cursor(*key: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = msgspec.json.decode(raw, type=tuple[*types])  # type: ignore[valid-type]
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValidationException("cursor is not one this API issued") from exc
    if any((isinstance(v, int) and not 0 <= v < BIGINT) or (isinstance(v, datetime) and not _sendable(v))
           for v in values):
        raise ValidationException("cursor is not one this API issued")
    return values
