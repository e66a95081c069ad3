"""Alert webhooks: the durable queue `alert_deliveries`, sent as Standard Webhooks with retries.

Every replica works the queue; a delivery is claimed by moving its `next_at` past the time one attempt
can take (`FOR UPDATE SKIP LOCKED`), so two replicas never send it at once and a replica that dies
mid-attempt leaves it to be tried again. A claimed batch is sent at once, each attempt within
`REQUEST_TIMEOUT_S` all told, so one slow receiver holds up no other and no attempt outlives its claim;
an attempt's outcome is recorded only while its claim holds. An alert's `resolved` waits for its
`raised` to each receiver, so no receiver is told of the end before the start. `webhook-id` is the same
on every attempt, so a receiver drops repeats. A 2xx delivers; 408, 429, 5xx, unreachable, too slow and a
refused target are retried on the schedule (`SWITCHBOARD_ALERT_WEBHOOK_RETRY_S`) and then `failed`; any
other status fails at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

import asyncpg
import httpx
from standardwebhooks.webhooks import Webhook

from backend import metrics
from backend.alerts.services import receiver_digest
from switchboard.webhook_targets import TargetRefused, check_target

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0
_LEASE_S = REQUEST_TIMEOUT_S + 5  # an attempt cannot take longer: after that the delivery is free again
_BATCH = 20
_RETRYABLE = frozenset({408, 429})

_CLAIM_SQL = """
UPDATE alert_deliveries SET attempts = attempts + 1, next_at = now() + make_interval(secs => $1)
WHERE id IN (SELECT d.id FROM alert_deliveries d WHERE d.status = 'pending' AND d.next_at <= now()
             AND NOT EXISTS (SELECT 1 FROM alert_deliveries e WHERE e.alert_id = d.alert_id
                             AND e.receiver = d.receiver
                             AND e.status = 'pending' AND e.id < d.id)
             ORDER BY d.next_at LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING id, alert_id, event, receiver, attempts, payload::text AS payload
"""


class AlertDelivery:
    def __init__(self, pool: asyncpg.Pool, *, receivers: Iterable[str], secret: str,
                 retry_s: tuple[float, ...], allow_private: bool, interval_s: float) -> None:
        self.pool = pool
        self.receivers = {receiver_digest(url): url for url in receivers}  # what a delivery names, its URL
        self.signer = Webhook(secret)
        self.retry_s = retry_s
        self.allow_private = allow_private
        self.interval_s = interval_s

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, follow_redirects=False) as client:
            while True:
                try:
                    sent = await self.deliver_due(client)
                except Exception:  # the queue outlives any one failure: Postgres away
                    log.exception("alert deliveries not worked; trying again")
                    sent = 0
                if not sent:
                    await asyncio.sleep(self.interval_s)

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        async with self.pool.acquire() as conn:
            claimed = await conn.fetch(_CLAIM_SQL, _LEASE_S, _BATCH)
        outcomes = await asyncio.gather(*(self._attempt_in_time(client, row) for row in claimed))
        for row, error in zip(claimed, outcomes, strict=True):
            await self._record(row, error)
        return len(claimed)

    async def _attempt_in_time(self, client: httpx.AsyncClient,
                               row: asyncpg.Record) -> tuple[str, bool] | None:
        # httpx's timeout bounds each read, not a receiver that answers a byte at a time, nor the DNS lookup
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await self._attempt(client, row)
        except TimeoutError:
            return f"no answer within {REQUEST_TIMEOUT_S:g} s", True
        except Exception as exc:  # noqa: BLE001 - one receiver's odd failure must not lose the batch's outcomes
            log.warning("alert delivery %s failed unexpectedly (%s)", row["id"], type(exc).__name__)
            return f"failed ({type(exc).__name__})", True

    async def _attempt(self, client: httpx.AsyncClient, row: asyncpg.Record) -> tuple[str, bool] | None:
        """None when delivered; else the error and whether another attempt may help."""
        url = self.receivers.get(row["receiver"])
        if url is None:
            return "the receiver is no longer configured", False
        try:
            await check_target(url, allow_private=self.allow_private)
        except TargetRefused as exc:
            return f"target refused: {exc}", True  # a DNS answer may change: retried, then failed
        now = datetime.now(UTC)
        message_id = f"msg_alert_{row['alert_id']}_{row['event'].split('.')[1]}"
        headers = {"content-type": "application/json", "webhook-id": message_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": self.signer.sign(message_id, now, row["payload"])}
        try:
            response = await client.post(url, content=row["payload"].encode(), headers=headers)
        except httpx.HTTPError as exc:
            return f"unreachable ({type(exc).__name__})", True
        if response.is_success:
            return None
        retryable = response.status_code in _RETRYABLE or response.status_code >= 500
        return f"HTTP {response.status_code}", retryable

    async def _record(self, row: asyncpg.Record, error: tuple[str, bool] | None) -> None:
        # only while this attempt's claim holds: a replica that claimed the delivery since has the last word
        claim = "id = $1 AND status = 'pending' AND attempts = $2"
        attempt = row["attempts"]
        async with self.pool.acquire() as conn:
            if error is None:
                outcome = "delivered"
                status = await conn.execute("UPDATE alert_deliveries SET status = 'delivered',"
                                            f" delivered_at = now(), last_error = NULL WHERE {claim}",
                                            row["id"], attempt)
            elif error[1] and attempt <= len(self.retry_s):
                outcome = "retried"
                status = await conn.execute("UPDATE alert_deliveries SET next_at = now()"
                                            f" + make_interval(secs => $3), last_error = $4 WHERE {claim}",
                                            row["id"], attempt, self.retry_s[attempt - 1], error[0])
            else:
                outcome = "failed"
                status = await conn.execute(f"UPDATE alert_deliveries SET status = 'failed', last_error = $3"
                                            f" WHERE {claim}", row["id"], attempt, error[0])
        if status != "UPDATE 1":
            return  # another replica's claim since: its attempt is the one counted
        metrics.ALERT_DELIVERIES.labels(outcome).inc()
        if outcome == "failed" and error is not None:
            log.warning("alert delivery %s given up after %d attempts: %s", row["id"], attempt, error[0])
