"""HTTP ingest: connectors that cannot speak NATS post CloudEvents; they go through the same stream."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.status_codes import HTTP_202_ACCEPTED

from backend import metrics
from backend.auth import CONNECTOR, Principal
from backend.failures.services import record_inbound
from backend.ingest.validate import Accepted, Rejected, trust_of, validate
from backend.rate_limits import INGEST
from backend.resources import AppResources
from switchboard.events import nats_msg_id, nats_subject

MAX_BATCH = 1000
# validated this many bytes at a time: a batch of large events (seconds of work) must not hold up the event
# loop, which the apply worker, the websockets and every other request share
_VALIDATED_BETWEEN_YIELDS = 64 * 1024


class EventRef(msgspec.Struct):
    source: str
    id: str


class Refusal(msgspec.Struct):
    index: int
    reason: str
    kind: str


class IngestResult(msgspec.Struct):
    accepted: list[EventRef]
    rejected: list[Refusal]


def _split(body: bytes) -> list[bytes]:
    """One event or a JSON array of them, each kept as the bytes it was sent as."""
    if body.lstrip()[:1] != b"[":
        return [body]
    try:
        return [bytes(raw) for raw in msgspec.json.decode(body, type=list[msgspec.Raw])]
    except msgspec.DecodeError as exc:
        raise ValidationException(f"malformed JSON array: {exc}") from exc
    except RecursionError as exc:
        raise ValidationException("a JSON array nested too deeply to read") from exc


class IngestController(Controller):
    path = "/api/v1"
    tags = ["ingest"]

    @post("/events", opt=CONNECTOR | INGEST, operation_id="postEvents", status_code=HTTP_202_ACCEPTED,
          request_max_body_size=8 * 1024 * 1024)
    async def post_events(self, request: Request[Principal, Any, State],
                          resources: AppResources) -> IngestResult:
        principal = request.user
        parts = _split(await request.body())
        if len(parts) > MAX_BATCH:
            raise ValidationException(f"at most {MAX_BATCH} events per request")
        settings = resources.settings.ingest
        admin, trust = "admin" in principal.roles, trust_of(settings)
        results: list[Accepted | Rejected] = []
        since_yield = 0
        for part in parts:
            results.append(validate(
                part, max_bytes=settings.max_event_bytes, known_systems=resources.known_systems,
                # an admin publishes for any system, but only at the sites its token holds
                allowed_system=None if admin else principal.system, allowed_sites=principal.sites,
                from_outside=True, trust=trust))
            since_yield += len(part)
            if since_yield >= _VALIDATED_BETWEEN_YIELDS:
                since_yield = 0
                await asyncio.sleep(0)
        rejected = [Refusal(i, r.reason, r.kind) for i, r in enumerate(results) if isinstance(r, Rejected)]
        # the same message sent again is the same failure (its attempts count up), not another
        failures = [(r, f"http:{hashlib.sha256(part).hexdigest()}")
                    for part, r in zip(parts, results, strict=True) if isinstance(r, Rejected)]
        if failures:
            async with resources.pool.acquire() as conn, resources.live.after_commit(conn) as announce:
                await record_inbound(conn, announce, failures)
            metrics.count_failures((failure for failure, _ in failures), resources.known_systems)

        to_publish = [(i, part, r) for i, (part, r) in enumerate(zip(parts, results, strict=True))
                      if isinstance(r, Accepted)]
        for _, _, dropping in to_publish:  # counted here: what is published no longer has them
            if dropping.dropped_fields:
                metrics.FIELDS_DROPPED.labels(dropping.event.type).inc(dropping.dropped_fields)
        # a token limited to sites publishes on its site's subject, as its connector would: the event speaks
        # for that site alone (backend/journeys/merge.py), a heartbeat for its first
        # an event with fields dropped is published without them: what was dropped is never kept
        acks = await asyncio.gather(
            *(resources.js.publish(nats_subject(a.event, site=a.scope),
                                   msgspec.json.encode(a.event) if a.dropped_fields else part,
                                   headers={"Nats-Msg-Id": nats_msg_id(a.event.source, a.event.id)})
              for _, part, a in to_publish),
            return_exceptions=True,
        )
        accepted = []
        for (index, _, published), ack in zip(to_publish, acks, strict=True):
            if isinstance(ack, BaseException):
                # not accepted, so still the sender's to resend: nothing is lost
                rejected.append(Refusal(index, "event bus unavailable; resend later", "unavailable"))
            else:
                accepted.append(EventRef(published.event.source, published.event.id))
        rejected.sort(key=lambda r: r.index)
        return IngestResult(accepted=accepted, rejected=rejected)
