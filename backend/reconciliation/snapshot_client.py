"""Reading a system's snapshot over `svc.snapshot.<system>.<site>`, then `svc.snapshot.<system>`
(request/reply, paged by ref).

Records come out as Switchboard may hold them (`keep`): whatever reads them (a run, a repair's
verification, a fallback's replay) may store them. A record it may not hold is left out with why, for
the reader to know (`skipped`), and the read goes on: one bad record does not hide the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from backend.ingest.validate import MAX_DEPTH, too_deep
from backend.reconciliation.ownership import kept, owned
from switchboard.privacy import looks_personal_identifier, scrub_identifier
from switchboard.snapshots import (
    BAD_REQUEST,
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    MAX_PAGE,
    SnapshotRecord,
    SnapshotRequest,
    decode_page,
    snapshot_subject,
)


class Unreachable(Exception):  # noqa: N818 - a state of the system, not a bug
    """The system's connector did not answer, or answered that its upstream is unavailable."""


class _Refused(Exception):  # noqa: N818
    """The connector refused the request (400): an older one that does not know `refs`."""


class CannotKeep(Exception):  # noqa: N818 - an answer about a record, not a bug
    """A record Switchboard may not store; the message says why, never with the record's values."""


_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(3000, 1, 1, tzinfo=UTC)
_NAMED_IN_LOG = 5  # skipped references a log line names


def keep(system: str, record: SnapshotRecord) -> SnapshotRecord:
    """The record as Switchboard may hold it (`ownership.kept`), or CannotKeep: what Postgres cannot hold, or
    personal data where only references and codes belong."""
    if not _EARLIEST <= record.updated_at < _LATEST:
        raise CannotKeep("its updated_at is outside the years 1970 to 2999")
    if any(looks_personal_identifier(v) for v in (record.ref, record.stage or "", *record.links)):
        raise CannotKeep("its reference, stage or links look like personal data")
    wanted = owned(system).record_fields
    if too_deep({name: value for name, value in record.fields.items() if name in wanted}):
        raise CannotKeep(f"its fields nest more than {MAX_DEPTH} levels deep")
    record = kept(system, record)
    if b"\\u0000" in msgspec.json.encode(record):
        raise CannotKeep("it holds a NUL character")
    return record


def skipped_summary(skipped: Mapping[str, str]) -> str:
    """For a log line: the first references skipped (any that look personal replaced), each with why."""
    named = [f"{scrub_identifier(ref)} ({why})" for ref, why in sorted(skipped.items())[:_NAMED_IN_LOG]]
    more = len(skipped) - _NAMED_IN_LOG
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


@dataclasses.dataclass(frozen=True)
class SnapshotClient:
    nc: NATS
    timeout_s: float
    max_records: int = 100_000  # of one read: a connector's paging must end

    async def day(self, system: str, site: str, day: date,
                  skipped: dict[str, str] | None = None) -> list[SnapshotRecord]:
        """Every record the system holds for a site and day that Switchboard can keep; `skipped` gets the
        references of the others, each with why."""
        try:
            return await self._pages(system, SnapshotRequest(site=site, day=day, limit=MAX_PAGE),
                                     {} if skipped is None else skipped)
        except _Refused as exc:
            raise Unreachable(f"{system} refused the snapshot request: {exc}") from exc

    async def refs(self, system: str, site: str, day: date, refs: Sequence[str],
                   skipped: dict[str, str] | None = None) -> dict[str, SnapshotRecord]:
        """The records among `refs` that the system holds (read by reference, whatever their day) and
        Switchboard can keep; `skipped` gets those of `refs` it cannot, each with why."""
        found: dict[str, SnapshotRecord] = {}
        left_out: dict[str, str] = {}
        asked_for = set(refs)
        wanted = sorted(asked_for)
        for start in range(0, len(wanted), MAX_PAGE):
            chunk = wanted[start:start + MAX_PAGE]
            try:
                records = await self._pages(system, SnapshotRequest(site=site, day=day, refs=chunk,
                                                                    limit=MAX_PAGE), left_out)
            except _Refused:  # an older connector: its day read once for the references left, not per chunk
                asked = set(wanted[start:])
                day_records = await self.day(system, site, day, left_out)
                found.update((r.ref, r) for r in day_records if r.ref in asked)
                break
            asked = set(chunk)  # only what was asked for: a connector's answer is not trusted further
            found.update((r.ref, r) for r in records if r.ref in asked)
        if skipped is not None:
            skipped.update((ref, why) for ref, why in left_out.items() if ref in asked_for)
        return found

    async def _ask(self, system: str, request: SnapshotRequest) -> Msg:
        """On the site's subject, where a connector limited to that site answers; then, when nobody answers
        there, on the system's (a connector that knows only the contract's first form)."""
        body = msgspec.json.encode(request)
        try:
            for subject in (snapshot_subject(system, request.site), snapshot_subject(system)):
                try:
                    return await self.nc.request(subject, body, timeout=self.timeout_s)
                except nats.errors.NoRespondersError:
                    continue
        except (nats.errors.TimeoutError, TimeoutError) as exc:
            raise Unreachable(f"{system} did not answer within {self.timeout_s:g}s") from exc
        raise Unreachable(f"no connector of {system} answers snapshots of {request.site}")

    async def _pages(self, system: str, request: SnapshotRequest,
                     skipped: dict[str, str]) -> list[SnapshotRecord]:
        records: list[SnapshotRecord] = []
        answered = 0  # skipped ones too: paging through nothing but records left out must end as well
        while True:
            reply = await self._ask(system, request)
            headers = reply.headers or {}
            if code := headers.get(ERROR_CODE_HEADER):
                reason = headers.get(ERROR_HEADER, "")[:200]
                if code == BAD_REQUEST:
                    raise _Refused(reason)
                raise Unreachable(f"{system} answered {code}: {reason}")
            try:
                page = decode_page(reply.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise Unreachable(f"{system} answered a malformed page: {str(exc)[:160]}") from exc
            except RecursionError as exc:  # no record of it can be told from the others
                raise Unreachable(f"{system} answered a page nested too deeply to be read") from exc
            # a record that cannot be kept is left out, not the read: the others are still compared; one of
            # another site than asked for is not this read's (a connector of one site answers for it alone)
            for record in page.records:
                if record.site != request.site:
                    continue
                try:
                    records.append(keep(system, record))
                except CannotKeep as exc:
                    skipped[record.ref] = str(exc)
            answered += len(page.records)
            if page.next_cursor is None:
                return records
            # paged by reference: each page moves the cursor on, so a read ends within max_records pages
            if not page.records or (request.cursor is not None and page.next_cursor <= request.cursor):
                raise Unreachable(f"{system} answered a page that does not move its cursor on")
            if answered >= self.max_records:
                raise Unreachable(f"{system} answered more than {self.max_records} records for one read"
                                  " (SWITCHBOARD_RECONCILE_SNAPSHOT_MAX_RECORDS)")
            request = msgspec.structs.replace(request, cursor=page.next_cursor)
