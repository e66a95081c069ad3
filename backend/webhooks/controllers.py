"""Inbound webhooks: `POST /api/v1/webhooks/<system>`, signed as Standard Webhooks.

The route is `PUBLIC` to the JWT guard on purpose: an upstream that sends webhooks signs each one
with the secret shared with Switchboard (per system, `SWITCHBOARD_WEBHOOK_SECRETS`) and carries no
bearer token. The signature is the authentication, and it is checked before anything else: an
unsigned or badly signed request, or one whose timestamp is more than 5 minutes off, is refused
(401) and changes nothing. A `webhook-id` already received is refused (409). A payload that does
not map to a valid canonical event is recorded as a failure (422). What passes is published to
JetStream exactly like `POST /api/v1/events`.
"""

from __future__ import annotations

import binascii
import hashlib
import itertools
import logging
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException, ValidationException
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT, HTTP_422_UNPROCESSABLE_ENTITY
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from backend import metrics
from backend.auth import PUBLIC
from backend.failures.services import record_inbound
from backend.ingest.validate import Rejected, trust_of, validate
from backend.rate_limits import WEBHOOK
from backend.resources import AppResources
from backend.webhooks.mapping import to_canonical
from switchboard.events import nats_msg_id, nats_subject

log = logging.getLogger(__name__)
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
PRUNE_EVERY = 500  # requests between deletions of receipts past the timestamp tolerance
_requests = itertools.count(1)


def _receipt_id(webhook_id: str) -> str:
    """What a replay receipt keeps of a webhook-id: its digest. The sender chooses the id and it may be
    personal (a CloudEvent body keeps its own event id, so nothing else checks its webhook-id), or too long
    to index."""
    return f"sha256:{hashlib.sha256(webhook_id.encode()).hexdigest()}"


def _failure_key(system: str, webhook_id: str) -> str:
    """One failure per delivery. Hashed: the id is the sender's and may be personal (refused as such, it must
    not stay in the key), and a long one cut to fit would make two deliveries sharing their start one
    failure, the second hidden by the first."""
    return f"webhook:{system}:{hashlib.sha256(webhook_id.encode()).hexdigest()}"


class WebhookAccepted(msgspec.Struct):
    source: str
    id: str


class WebhookController(Controller):
    path = "/api/v1/webhooks"
    tags = ["ingest"]

    @post("/{system:str}", opt=PUBLIC | WEBHOOK, operation_id="postWebhook", status_code=HTTP_202_ACCEPTED,
          request_max_body_size=256 * 1024)
    async def receive(self, system: FromPath[str], request: Request[Any, Any, State],
                      resources: AppResources) -> WebhookAccepted:
        secret = resources.settings.webhooks.webhook_secret(system)
        if secret is None or system not in resources.known_systems:
            raise NotFoundException(f"no webhook endpoint for system {system!r}")
        body = await request.body()
        try:
            body.decode()  # Standard Webhooks signs text: the library would refuse it as a bad signature
        except UnicodeDecodeError as exc:
            raise ValidationException(f"the body is not valid UTF-8 (byte {exc.start})") from exc
        headers = {name: request.headers.get(name, "") for name in SIGNATURE_HEADERS}
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError, binascii.Error) as exc:
            log.info("webhook for %s refused: %s", system, exc)  # the reason only: never the signature
            raise NotAuthorizedException(f"webhook refused: {exc}") from exc
        webhook_id = headers["webhook-id"]
        settings = resources.settings.ingest
        result = validate(to_canonical(system, webhook_id, body), max_bytes=settings.max_event_bytes,
                          known_systems=resources.known_systems, allowed_system=system, from_outside=True,
                          trust=trust_of(settings))
        if isinstance(result, Rejected):
            async with resources.pool.acquire() as conn, resources.live.after_commit(conn) as announce:
                await record_inbound(conn, announce, [(result, _failure_key(system, webhook_id))])
            metrics.count_failures([result], resources.known_systems)
            raise HTTPException(status_code=HTTP_422_UNPROCESSABLE_ENTITY,
                                detail=f"{result.kind}: {result.reason}")
        event = result.event
        async with resources.pool.acquire() as conn, conn.transaction():
            # the receipt commits only if the publish succeeds: a sender retrying after a 503 is not a replay
            fresh = await conn.fetchval(
                "INSERT INTO webhook_receipts (system, webhook_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                " RETURNING true",
                system, _receipt_id(webhook_id))
            if not fresh:
                raise HTTPException(status_code=HTTP_409_CONFLICT,
                                    detail="this webhook-id was already received")
            try:
                await resources.js.publish(nats_subject(event), msgspec.json.encode(event),
                                           headers={"Nats-Msg-Id": nats_msg_id(event.source, event.id)})
            except Exception as exc:
                raise HTTPException(status_code=503, detail="event bus unavailable; resend later") from exc
            if next(_requests) % PRUNE_EVERY == 0:
                await conn.execute("DELETE FROM webhook_receipts WHERE received_at < now() - interval '1"
                                   " hour'")
        return WebhookAccepted(source=event.source, id=event.id)
