"""Snapshot request/reply on `svc.snapshot.<system>[.<site>]` (CONTRACT section 5), shared by connectors
and the reconciler.

A snapshot is the system's own truth for one site and day, ordered by `ref` and paged by it:
the reconciler asks with `cursor=None`, then with each `next_cursor` until it is null. With `refs`
the reply holds just those records (the ones the system has), paged the same way.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from switchboard.events import AwareTime, Code, Ref

MAX_PAGE = 1000


class SnapshotRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True,
                      omit_defaults=True):
    site: Code
    day: date
    cursor: Ref | None = None  # the last ref of the previous page
    limit: Annotated[int, Meta(ge=1, le=MAX_PAGE)] = 500
    # Only these records of the site, whatever day they were made: the reconciler's read of a few records
    # (verifying a repair, replaying a fallback). Omitted on the wire when unset, so older connectors
    # keep answering whole-day requests; one that refuses `refs` answers 400.
    refs: Annotated[list[Ref], Meta(max_length=MAX_PAGE)] | None = None


class SnapshotRecord(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One record as the upstream holds it: a reference, its stage, and the attributes it is authoritative
    for.

    `fields` uses the journey's attribute names (`service`, `slot_start`, `priority`, `eligibility`,
    `counter`, `ticket`, `last_interaction`), so the reconciler compares like with like.
    """

    ref: Ref
    site: Code
    stage: Code | None = None
    links: list[Ref] = []
    fields: dict[str, Any] = {}
    updated_at: AwareTime


class SnapshotPage(msgspec.Struct, kw_only=True, frozen=True):
    system: Code
    site: Code
    day: date
    records: list[SnapshotRecord]
    next_cursor: Ref | None
    as_of: AwareTime


# A reply that is not a page is a NATS micro error: these headers carry the code and the reason.
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"
UNAVAILABLE = "503"  # the upstream is down or did not answer
BAD_REQUEST = "400"


def snapshot_subject(system: str, site: str | None = None) -> str:
    """`svc.snapshot.<system>`, or with the request's site as its last token: the reconciler asks there first,
    and a connector limited to sites may answer nowhere else (docs/contract-notes.md)."""
    return f"svc.snapshot.{system}" + (f".{site}" if site is not None else "")


decode_request = msgspec.json.Decoder(SnapshotRequest).decode
decode_page = msgspec.json.Decoder(SnapshotPage).decode
