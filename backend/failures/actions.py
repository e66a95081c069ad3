"""Retry and discard (CONTRACT section 4), each in one transaction with its audit row.

A retry tells the truth: an inbound failure is resolved only when its stored event validates and
applies now; a command failure is re-sent and resolved only when the system answers `ok`.
A retry of the same failure again within the debounce window, or while its command is still being
re-sent, is the same click: it changes nothing and says so. A retry never overrules the transport:
an event refused for who sent it (`unauthorized_source`, `source_mismatch`) is only ever discarded
(CONTRACT section 9), since what is stored of it no longer says how it arrived.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import asyncpg
import msgspec
from litestar.exceptions import ClientException

from backend.audit import services as audit
from backend.auth import Principal
from backend.commands import lifecycle
from backend.errors import ConflictException
from backend.failures import services
from backend.failures.schemas import BulkFilter, BulkRetryResult, RetryResult
from backend.ingest.apply import JourneyTooLargeError, Outcome, apply_events
from backend.ingest.validate import Accepted, trust_of, validate
from backend.live.bus import Announcements
from backend.paging import decode_cursor, encode_cursor
from backend.privacy import acting_user
from backend.resources import Resources
from backend.visibility import visible
from switchboard.privacy import excerpt

COMMAND_KINDS = frozenset({"command_failed", "command_timeout"})
# a bulk retry's selection at most: each retry is a transaction and a publish, and one request stays short
BULK_RETRY_MAX = 500
# refused for who sent them: a retry re-validates the stored payload without the NATS subject or the token
# it came with, so it would apply an event its sender was not allowed to send
UNRETRYABLE_KINDS = frozenset({"unauthorized_source", "source_mismatch"})
UNRETRYABLE_NOTE = ("an event refused for who sent it is never applied by a retry; discard it, and have the"
                    " system it belongs to send it")
_PII_NOTE = ("personal data is stored redacted, so this payload can never become valid;"
             " the source must send the event again without it")


async def _locked_failure(conn: asyncpg.Connection, principal: Principal, failure_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM failures WHERE id = $1 FOR UPDATE", failure_id)
    return visible(principal, "failure", row, itemgetter("site"))


def _result(row: asyncpg.Record, outcome: str, note: str | None = None) -> RetryResult:
    return RetryResult(failure_id=row["id"], outcome=outcome, status=row["status"],  # type: ignore[arg-type]
                       attempts=row["attempts"], reason=row["reason"], note=note)


async def _retry_command(conn: asyncpg.Connection, announce: Announcements, row: asyncpg.Record,
                         actor: str) -> RetryResult:
    if row["status"] == "retrying":
        return _result(row, "already_retrying")
    requeued = await lifecycle.requeue_for_retry(conn, row["command_id"])
    answered_ok = not requeued and await conn.fetchval(
        "SELECT status = 'ok' FROM commands WHERE id = $1::uuid", row["command_id"])
    status = "resolved" if answered_ok else "retrying" if requeued else "open"
    row = await conn.fetchrow(
        "UPDATE failures SET status = $2, last_retry_at = now(), acted_by = $3 WHERE id = $1 RETURNING *",
        row["id"], status, actor)
    await services.failure_changed(conn, announce, [row["id"]])
    if answered_ok:
        return _result(row, "resolved", "the system has since answered ok")
    if not requeued:
        return _result(row, "still_failing", "the command no longer exists")
    return _result(row, "retrying", "re-sent; resolved when the system answers ok")


async def _apply_again(conn: asyncpg.Connection, checked: Accepted,
                       resources: Resources) -> Outcome | tuple[str, str]:
    """The outcome of applying a failed event again, or the kind and reason it still fails with."""
    try:
        async with conn.transaction():
            outcome = await apply_events(conn, [checked], rules=resources.rules)
    except (asyncpg.PostgresError, JourneyTooLargeError) as exc:
        return "apply_error", f"{type(exc).__name__}: {exc}"
    if outcome.refused:
        refusal, _ = outcome.refused[0]
        return refusal.kind, refusal.reason
    return outcome


async def _retry_inbound(conn: asyncpg.Connection, announce: Announcements, row: asyncpg.Record, actor: str,
                         resources: Resources) -> RetryResult:
    settings = resources.settings.ingest
    note = None
    if row["kind"] == "pii_rejected":  # the redacted payload is not what was sent: it is never applied
        kind, reason, note = row["kind"], row["reason"], _PII_NOTE
        checked = None
    else:
        checked = validate(msgspec.json.encode(msgspec.json.decode(row["payload"])),
                           max_bytes=settings.max_event_bytes,
                           known_systems=resources.known_systems, trust=trust_of(settings),
                           # an event that failed to apply had been accepted, so one of Switchboard's own
                           # (a manual step, a correction) carried the backend's signature, which the stored
                           # payload does not; no other kind is taken as signed
                           signed_by_backend=row["kind"] == "apply_error",
                           # sent by a connector limited to sites: applied at its sites alone, as it would
                           # have been
                           allowed_sites=None if row["sender_sites"] is None
                           else frozenset(msgspec.json.decode(row["sender_sites"], type=list[str])))
    if isinstance(checked, Accepted):
        applied = await _apply_again(conn, checked, resources)
        if isinstance(applied, Outcome):
            resolved = await conn.fetchrow(
                "UPDATE failures SET status = 'resolved', attempts = attempts + 1, last_at = now(),"
                " last_retry_at = now(), acted_by = $2 WHERE id = $1 RETURNING *", row["id"], actor)
            # with those the event itself settled (a command result resolving its command's failure)
            await services.failure_changed(conn, announce, [row["id"], *applied.failures])
            done = "the event is applied" if applied.applied else "the event had already been applied"
            return _result(resolved, "resolved", done)
        kind, reason = applied
    elif checked is not None:
        kind, reason = checked.kind, checked.reason
    still = await conn.fetchrow(
        "UPDATE failures SET status = 'open', kind = $2, reason = $3, attempts = attempts + 1,"
        " last_at = now(), last_retry_at = now(), acted_by = $4 WHERE id = $1 RETURNING *",
        row["id"], kind, excerpt(reason, 1000), actor)
    await services.failure_changed(conn, announce, [row["id"]])
    return _result(still, "still_failing", note)


async def retry(resources: Resources, principal: Principal, failure_id: int, reason: str | None,
                selection: str | None = None) -> RetryResult:
    async with resources.pool.acquire() as conn, resources.live.after_commit(conn) as announce:
        row = await _locked_failure(conn, principal, failure_id)
        debounce = timedelta(seconds=resources.settings.failures.retry_debounce_s)
        # in a bulk retry, what changed since its preview is told per failure: the others are retried
        if row["status"] == "discarded":
            if selection is None:
                raise ConflictException("a discarded failure is not retried")
            result = _result(row, "already_discarded", "discarded since the preview")
        elif row["kind"] in UNRETRYABLE_KINDS:
            if selection is None:
                raise ConflictException(f"a {row['kind']} failure is never retried: {UNRETRYABLE_NOTE}")
            result = _result(row, "refused",
                             f"reopened as {row['kind']} since the preview: {UNRETRYABLE_NOTE}")
        elif row["status"] == "resolved":
            result = _result(row, "already_resolved")
        elif row["last_retry_at"] and datetime.now(UTC) - row["last_retry_at"] < debounce:
            result = _result(row, "just_retried", "the same failure was retried moments ago")
        elif row["kind"] in COMMAND_KINDS:
            result = await _retry_command(conn, announce, row, acting_user(principal, resources))
        else:
            result = await _retry_inbound(conn, announce, row, acting_user(principal, resources), resources)
        details: dict[str, Any] = msgspec.to_builtins(result)
        if selection:
            details["selection"] = selection
        await audit.record(conn, principal, action="failure.retry", target=f"failure:{failure_id}",
                           reason=reason, result=details)
        return result


async def discard(resources: Resources, principal: Principal, failure_id: int, reason: str) -> RetryResult:
    async with resources.pool.acquire() as conn, resources.live.after_commit(conn) as announce:
        row = await _locked_failure(conn, principal, failure_id)
        if row["status"] == "resolved":
            raise ConflictException("a resolved failure cannot be discarded")
        if row["status"] == "discarded":
            result = _result(row, "already_discarded")
        else:
            row = await conn.fetchrow(
                "UPDATE failures SET status = 'discarded', last_at = now(), acted_by = $2 WHERE id = $1"
                " RETURNING *",
                failure_id, acting_user(principal, resources))
            if row["command_id"]:  # a command being re-sent stops here
                await lifecycle.abandon(conn, row["command_id"])
            await services.failure_changed(conn, announce, [failure_id])
            result = _result(row, "discarded")
        await audit.record(conn, principal, action="failure.discard", target=f"failure:{failure_id}",
                           reason=reason, result=msgspec.to_builtins(result))
        return result


def _digest(ids: list[int]) -> str:
    return hashlib.sha256(msgspec.json.encode(ids)).hexdigest()[:32]


async def bulk_retry(resources: Resources, principal: Principal, wanted: BulkFilter, *, dry_run: bool,
                     selection: str | None, reason: str | None) -> BulkRetryResult:
    """A preview names the oldest `BULK_RETRY_MAX` matching failures a retry may apply (those refused for who
    sent them are counted, never taken: they would stand first in every selection); retrying needs that
    preview's `selection` and retries exactly that set (one request stays short; a larger set takes more)."""
    if not dry_run and selection is None:
        raise ClientException("preview first (dry_run) and send back its selection")
    up_to = None
    if selection is not None:
        kind, system, site, up_to, count, digest = decode_cursor(selection, str, str, str, int, int, str)
        wanted = BulkFilter(kind=kind or None, system=system or None, site=site or None)
    async with resources.pool.acquire() as conn:
        # one more than a selection holds: a set grown past it since the preview shows as a change
        oldest, matched, skipped = await services.matching(
            conn, sites=principal.scope(wanted.site), kind=wanted.kind, system=wanted.system,
            limit=BULK_RETRY_MAX + 1, leave_out=sorted(UNRETRYABLE_KINDS))
    ids = oldest[:BULK_RETRY_MAX] if up_to is None else [f for f in oldest if f <= up_to]
    notes = [f"{skipped} refused for who sent them, never retried: discard them" if skipped else "",
             f"the oldest {len(ids)} of {matched - skipped}; retry again for the rest"
             if matched - skipped > len(ids) else ""]
    note = "; ".join(n for n in notes if n) or None
    if selection is not None and (len(ids) != count or _digest(ids) != digest):
        raise ConflictException(f"the matching set changed since the preview ({len(ids)} match now, not"
                                f" {count});"
                                " preview again")
    token = encode_cursor(wanted.kind or "", wanted.system or "", wanted.site or "", max(ids, default=0),
                          len(ids), _digest(ids))
    if dry_run:
        return BulkRetryResult(matched=matched, selected=len(ids), selection=token, dry_run=True,
                               skipped=skipped, note=note)
    results = [await retry(resources, principal, failure_id, reason, selection=token) for failure_id in ids]
    return BulkRetryResult(matched=matched, selected=len(ids), selection=token, dry_run=False,
                           results=results, skipped=skipped, note=note)
