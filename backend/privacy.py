"""Keeping personal data out of what is stored: staff's free-text reasons, errors, and who did something.

Every stored reason (audit log, fallbacks, drift items) goes through `scrubbed_reason`, every stored error
(command results, reconciliation runs) through `scrubbed_error`, and every stored actor, the audit log's
included, through `acting_user`/`actor_name`, so one rule holds in one place (the patterns themselves are
switchboard/privacy.py's, shared with event validation and the logs).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from backend.auth import Principal, signing_secret
from backend.resources import Resources
from backend.settings import BackendSettings
from switchboard.privacy import looks_like_a_name, looks_personal_identifier, scrub

# a token `sub` used as it is: an opaque code, nothing that could be an address, a number or a name
_SAFE_SUB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_LONG_NUMBER = re.compile(r"\d{7,}")


def scrubbed_reason(reason: str | None) -> str | None:
    """A reason typed by staff with e-mail addresses and phone numbers in it replaced: a note like
    "customer rang from +44…" never puts personal data at rest."""
    return scrub(reason) if reason else reason


def scrubbed_error(error: str | None) -> str | None:
    """An error an upstream or a connector reported, stored without the personal data it may quote."""
    return scrub(error) if error else error


def _is_safe(sub: str) -> bool:
    return (_SAFE_SUB.fullmatch(sub) is not None and not _LONG_NUMBER.search(sub)
            and not looks_like_a_name(sub) and not looks_personal_identifier(sub))


def actor_name(sub: str, settings: BackendSettings) -> str:
    """A token's `sub` as stored: as it is when it is a safe code, else a keyed pseudonym (stable per user,
    not reversible without the secret). `John_Smith`, `jane.doe`, an e-mail or a phone number is
    pseudonymised."""
    if _is_safe(sub):
        return sub
    digest = hmac.new(signing_secret(settings).encode(), sub.encode(), hashlib.sha256).hexdigest()
    name = f"u-{digest[:16]}"
    # a run of eleven or more digits (one digest in a few hundred) reads as a card or phone number, and
    # `/manual/<name>` would be refused as personal: a letter in the middle keeps each run to eight
    return f"u-{digest[:8]}x{digest[8:16]}" if looks_personal_identifier(name) else name


def acting_user(principal: Principal, resources: Resources) -> str:
    """Who acted, as stored (and as the user part of `/manual/<user>`)."""
    return actor_name(principal.sub, resources.settings)


def audit_actor(principal: Principal) -> str:
    """The audit log's actor: `actor_name` with this process's settings (the audit log is written where no
    request's resources are at hand, by the reconciler too)."""
    return actor_name(principal.sub, BackendSettings.from_env())
