"""One answer for anything looked up by id: 404 when there is none, 403 when it lies at a site outside the
caller's (CONTRACT section 6), in the same words everywhere."""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import TypeVar

from litestar.exceptions import NotFoundException, PermissionDeniedException

from backend.auth import Principal

T = TypeVar("T")
_SITE = attrgetter("site")


def visible(principal: Principal, what: str, item: T | None, site: Callable[[T], str | None] = _SITE) -> T:
    """`item` when the caller may see its site (`site(item)`, by default its `.site`)."""
    if item is None:
        raise NotFoundException(f"no such {what}")
    if not principal.may_see(site(item)):
        raise PermissionDeniedException(f"this {what} is outside your sites")
    return item
