"""Reading a system's snapshot over `svc.snapshot.<system>.<site>`, then `svc.snapshot.<system>`
(request/reply, paged by ref).

Records come out as Switchboard may hold them (`ownership.kept`): whatever reads them (a run, a
repair's verification, a fallback's replay) may store them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from datetime import UTC, date, datetime

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from backend.reconciliation.ownership import kept
from switchboard.privacy import looks_personal_identifier
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


_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def _unkeepable(record: SnapshotRecord) -> str | None:
    """Why a record (as kept) may not be stored, or None: what Postgres cannot hold, or personal data where
    only references and codes belong."""
    if not _EARLIEST <= record.updated_at < _LATEST:
        return "its updated_at is outside the years 1970 to 2999"
    if any(looks_personal_identifier(v) for v in (record.ref, record.stage or "", *record.links)):
        return "its reference, stage or links look like personal data"
    if b"\\u0000" in msgspec.json.encode(record):
        return "it holds a NUL character"
    return None


@dataclasses.dataclass(frozen=True)
class SnapshotClient:
    nc: NATS
    timeout_s: float
    max_records: int = 100_000  # of one read: a connector's paging must end

    async def day(self, system: str, site: str, day: date) -> list[SnapshotRecord]:
        """Every record the system holds for a site and day."""
        try:
            return await self._pages(system, SnapshotRequest(site=site, day=day, limit=MAX_PAGE))
        except _Refused as exc:
            raise Unreachable(f"{system} refused the snapshot request: {exc}") from exc

    async def refs(self, system: str, site: str, day: date, refs: Sequence[str]) -> dict[str, SnapshotRecord]:
        """The records among `refs` that the system holds (read by reference, whatever their day)."""
        found: dict[str, SnapshotRecord] = {}
        wanted = sorted(set(refs))
        for start in range(0, len(wanted), MAX_PAGE):
            chunk = wanted[start:start + MAX_PAGE]
            try:
                records = await self._pages(system,
                                            SnapshotRequest(site=site, day=day, refs=chunk, limit=MAX_PAGE))
            except _Refused:  # an older connector: its day read once for the references left, not per chunk
                asked = set(wanted[start:])
                found.update((r.ref, r) for r in await self.day(system, site, day) if r.ref in asked)
                return found
            asked = set(chunk)  # only what was asked for: a connector's answer is not trusted further
            found.update((r.ref, r) for r in records if r.ref in asked)
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

    async def _pages(self, system: str, request: SnapshotRequest) -> list[SnapshotRecord]:
        records: list[SnapshotRecord] = []
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
            for record in map(functools.partial(kept, system), page.records):
                if refusal := _unkeepable(record):
                    raise Unreachable(f"{system} answered a record Switchboard cannot keep: {refusal}")
                records.append(record)
            if page.next_cursor is None:
                return records
            # paged by reference: each page moves the cursor on, so a read ends within max_records pages
            if not page.records or (request.cursor is not None and page.next_cursor <= request.cursor):
                raise Unreachable(f"{system} answered a page that does not move its cursor on")
            if len(records) >= self.max_records:
                raise Unreachable(f"{system} answered more than {self.max_records} records for one read"
                                  " (SWITCHBOARD_RECONCILE_SNAPSHOT_MAX_RECORDS)")
            request = msgspec.structs.replace(request, cursor=page.next_cursor)
