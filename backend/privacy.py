"""Keeping personal data out of what is stored: staff's free-text reasons and who did something.

Every stored reason (audit log, fallbacks, drift items) goes through `scrubbed_reason`, and every
stored actor other than the audit log's through `acting_user`, so one rule holds in one place.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from backend.auth import Principal, signing_secret
from backend.ingest.validate import scrub
from backend.resources import Resources

# a token `sub` used as it is: an opaque code, nothing that could be an address or number
_SAFE_SUB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_LONG_NUMBER = re.compile(r"\d{7,}")


def scrubbed_reason(reason: str | None) -> str | None:
    """A reason typed by staff with e-mail addresses and phone numbers in it replaced: a note like
    "customer rang from +44…" never puts personal data at rest."""
    return scrub(reason) if reason else reason


def acting_user(principal: Principal, resources: Resources) -> str:
    """Who acted, as stored outside the audit log (and as the user part of `/manual/<user>`): the token's
    `sub` when it is a safe code, else a keyed pseudonym (stable per user, not reversible without the
    secret)."""
    sub = principal.sub
    if _SAFE_SUB.fullmatch(sub) and not _LONG_NUMBER.search(sub):
        return sub
    digest = hmac.new(signing_secret(resources.settings).encode(), sub.encode(), hashlib.sha256).hexdigest()
    return f"u-{digest[:16]}"
