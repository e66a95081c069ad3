"""The relay: publishes outbox commands to SVC_COMMANDS and applies the delivery policy.

Every backend runs one; they share the work through row locks. A command is published while its
row is locked in a transaction and marked `sent` in that same transaction, with the message id
derived from (command id, attempt). A backend that dies before the commit leaves the row as it
was, so the next relay publishes the same attempt again under the same message id and JetStream's
duplicate window drops the copy: a command is neither lost nor doubled.

Per system one relay at a time publishes (an advisory lock), in creation order, so held commands
go out in order when their system is back, at the system's pace (`backend/integrations/pace.py`):
slower after an outage or trouble, and for commands that reach staff, no faster than the floor's
open counters can take them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

import asyncpg
import msgspec
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError as JetStreamAPIError

from backend.commands import lifecycle
from backend.db import lock_key
from backend.failures.services import CommandFailure, record_command_failures
from backend.integrations import health
from backend.integrations import pace as pacing
from backend.live.bus import LiveBus
from backend.messaging import site_command_consumer
from switchboard.commands import COMMANDS_STREAM, Command, command_subject

log = logging.getLogger(__name__)
_SITE_CONSUMER_RECHECK_S = 300.0
_SITE_CONSUMER_RETRY_S = 30.0
_CONSUMER_NOT_UPDATABLE = 10012  # JetStream: a consumer's deliver policy cannot be updated

_UNAVAILABLE = (OSError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
                asyncpg.ConnectionDoesNotExistError,
                asyncpg.AdminShutdownError, asyncpg.TooManyConnectionsError, TimeoutError, NatsError)


class DeliveryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    answer_timeout_s: float
    backoff_s: float
    backoff_max_s: float
    max_attempts: int

    def backoff(self, attempt: int) -> timedelta:
        """Exponential in the attempt, capped, with jitter so that many retries do not fall due together."""
        # the exponent capped: past a thousand attempts 2 ** n no longer fits a float
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** min(max(attempt - 1, 0), 64))
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not secrecy


# a command given back (answered `unavailable`, or unanswered while its system is down) is held without
# using up an attempt, until it has been sent this many times the policy's attempts: then it is a failure
# like any other
HOLDS_PER_ATTEMPT = 4


def message_id(command_id: object, attempt: int) -> str:
    """The command id for the first attempt; later attempts must not fall into JetStream's duplicate
    window."""
    return str(command_id) if attempt == 1 else f"{command_id}/{attempt}"



# Systems with commands waiting, found by skipping from one to the next in `commands_waiting`; of those not
# down, the ones with a command due.
SYSTEMS_DUE = """
WITH RECURSIVE waiting (system) AS (
    (SELECT system FROM commands WHERE status IN ('pending', 'held') ORDER BY system LIMIT 1)
    UNION ALL
    SELECT (SELECT c.system FROM commands c WHERE c.status IN ('pending', 'held') AND c.system > w.system
            ORDER BY c.system LIMIT 1)
    FROM waiting w WHERE w.system IS NOT NULL
)
SELECT w.system FROM waiting w WHERE w.system <> ALL($1::text[]) AND EXISTS (
    SELECT 1 FROM commands c WHERE c.system = w.system AND c.status IN ('pending', 'held')
      AND c.next_at <= now())
"""

# A system's due commands, oldest first, but none behind an earlier command of its journey that still waits
# (held after an `unavailable`, or backed off after a failure): a journey's commands go out in their order
# (`ticket.call` before `service.start`), whatever became due first. The look back is by journey, by index.
# `BETWEEN $1 AND $1` and ordering by system too, not `= $1`: only `commands_waiting` then gives the order.
# With `=`, Postgres overestimates what one system has waiting when another holds a large backlog and walks
# every command by `seq` instead (up to 175 ms a tick among 800,000 commands, 0.1 ms this way).
DUE = """
SELECT * FROM commands c WHERE c.system BETWEEN $1 AND $1 AND c.status IN ('pending', 'held')
  AND c.next_at <= now() AND c.site <> ALL($3::text[])
  AND NOT EXISTS (SELECT 1 FROM commands e WHERE e.journey_id = c.journey_id AND e.system = c.system
                  AND e.status IN ('pending', 'held') AND e.next_at > now() AND e.seq < c.seq)
ORDER BY c.system, c.seq LIMIT $2 FOR UPDATE OF c
"""


_WINDOWS_PER_ROUND = 5  # windows of `batch` due commands one system's round reads, past sites that wait


@dataclass
class _Waiting:
    """The sites whose commands wait this round: held by the floor's open counters, or with no consumer."""

    floor_held: set[str] = field(default_factory=set)
    unready: set[str] = field(default_factory=set)

    @property
    def sites(self) -> set[str]:
        return self.floor_held | self.unready


class CommandRelay:
    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext, bus: LiveBus, policy: DeliveryPolicy,
                 pace: pacing.PacePolicy, *,
                 interval_s: float, heartbeat_interval_s: float, batch: int = 200,
                 per_site: frozenset[str] = frozenset()) -> None:
        """`per_site`: the systems commanded per site (`SWITCHBOARD_COMMANDS_PER_SITE`)."""
        self.pool = pool
        self.bus = bus
        self.js = js
        self.policy = policy
        self.pace = pace
        self.interval_s = interval_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.batch = batch
        self.per_site = per_site
        # (system, site): until when the consumer of that site's commands counts as there (made), or as
        # refused (asked again then)
        self._site_consumers: dict[tuple[str, str], tuple[bool, float]] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except _UNAVAILABLE as exc:
                log.warning("command relay paused (%s)", type(exc).__name__)
            except Exception:  # a deadlock with another replica, a failover's read-only moment: the next tick
                log.exception("command relay tick failed; trying again")
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> None:
        async with self.pool.acquire() as conn:
            down = await health.down_systems(conn, self.heartbeat_interval_s)
            await self.act_on_answers(conn, down)
            await pacing.hold_while_down(conn, down, self.pace)
            if down:
                await lifecycle.hold_for_down_systems(conn, sorted(down))
            due = await conn.fetch(SYSTEMS_DUE, sorted(down))
            for system in sorted(r["system"] for r in due):
                try:
                    async with conn.transaction():
                        await self.publish_due(conn, system)
                except asyncpg.PostgresError as exc:  # one system's trouble holds back no other system's
                    if isinstance(exc, _UNAVAILABLE):
                        raise
                    log.warning("commands for %s not published this tick (%s)", system, type(exc).__name__)

    async def publish_due(self, conn: asyncpg.Connection, system: str) -> int:
        """Publish the due commands of one system in order and at its pace, in the caller's transaction;
        how many went out. A window of due commands whose sites wait (the floor, their consumer) is followed
        by the next without those sites: one site's backlog holds up no other site's commands."""
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock_key(f"relay {system}")):
            return 0  # another relay is publishing this system's commands
        rows = await conn.fetch(DUE, system, self.batch, [])
        granted = await pacing.allowance(conn, system, sorted({r["site"] for r in rows}), self.pace)
        waiting = _Waiting()
        total = 0
        for window in range(_WINDOWS_PER_ROUND):
            if window:
                rows = await conn.fetch(DUE, system, self.batch, sorted(waiting.sites))
                await pacing.add_sites(conn, granted, sorted({r["site"] for r in rows}), self.pace)
            allowed = granted.commands - total
            sent, stopped = await self._publish_window(system, rows, granted, allowed, waiting)
            if sent:
                await lifecycle.mark_sent(conn, sent, self.policy.answer_timeout_s)
            total += len(sent)
            if stopped or len(rows) < self.batch or not waiting.sites:
                break
        await pacing.spend(conn, granted, total, waiting.floor_held, self.pace)
        return total

    async def _publish_window(self, system: str, rows: list[asyncpg.Record], granted: pacing.Allowance,
                              allowed: int, waiting: _Waiting) -> tuple[list[UUID], bool]:
        """Publish `rows` in order, at most `allowed`, skipping the sites that wait (and adding to them);
        the ids sent, and whether the round must stop (its pace is spent, or NATS failed)."""
        budget = granted.floor_budget
        sent: list[UUID] = []
        for row in rows:
            if len(sent) >= allowed:
                return sent, True
            site = row["site"]
            if site in waiting.sites:
                continue  # an earlier command of this site waits (the floor, its consumer): keep the order
            if row["command"] in self.pace.staff_commands and site in budget:
                if budget[site] <= 0:
                    waiting.floor_held.add(site)
                    continue
                budget[site] -= 1
            attempt = row["attempts"] + 1
            command = Command(id=str(row["id"]), system=row["system"], command=row["command"],
                              journey_id=row["journey_id"],
                              refs=list(row["refs"]), site=site, data=msgspec.json.decode(row["data"]),
                              attempt=attempt, created_at=row["created_at"])
            per_site = system in self.per_site
            try:
                if per_site and not await self._site_consumer(system, site):
                    waiting.unready.add(site)
                    continue
                await self.js.publish(command_subject(command, per_site=per_site),
                                      msgspec.json.encode(command),
                                      headers={"Nats-Msg-Id": message_id(row["id"], attempt)})
            except (NatsError, TimeoutError) as exc:
                log.warning("publishing commands for %s stopped (%s)", system, type(exc).__name__)
                return sent, True  # the rest stays due, in order, for the next tick
            sent.append(row["id"])
        return sent, len(sent) >= allowed

    async def _site_consumer(self, system: str, site: str) -> bool:
        """Make the consumer of a site's commands before they are published (again every few minutes, and
        after one of them went unanswered, in case it was deleted), so that none goes unread; whether it is
        there. One JetStream refuses holds up that site only, asked again a little later."""
        known = self._site_consumers.get((system, site))
        if known is not None and time.monotonic() < known[1]:
            return known[0]
        config = site_command_consumer(system, site)
        try:
            try:
                await self.js.add_consumer(COMMANDS_STREAM, config)
            except JetStreamAPIError as exc:
                if exc.err_code != _CONSUMER_NOT_UPDATABLE:
                    raise
                # made otherwise (another deliver policy): made again as it must be; what it held unread
                # is unanswered, and sent again
                await self.js.delete_consumer(COMMANDS_STREAM, config.durable_name or "")
                await self.js.add_consumer(COMMANDS_STREAM, config)
        except JetStreamAPIError as exc:
            log.warning("commands for %s at site %s wait: its consumer %s was refused (%s)", system, site,
                        config.durable_name, exc.description)
            self._site_consumers[(system, site)] = (False, time.monotonic() + _SITE_CONSUMER_RETRY_S)
            return False
        self._site_consumers[(system, site)] = (True, time.monotonic() + _SITE_CONSUMER_RECHECK_S)
        return True

    async def act_on_answers(self, conn: asyncpg.Connection, down: set[str]) -> None:
        """Sent commands that were answered `failed`/`unavailable`, or whose answer is overdue.

        A system that could not take a command (it answered `unavailable`, or went down without answering)
        gets it again once it is back: held, and that attempt does not count against the limit, until it
        has been sent `HOLDS_PER_ATTEMPT` times the policy's attempts in all.
        """
        async with self.bus.after_commit(conn) as announce:
            rows = await conn.fetch(
                "SELECT * FROM commands WHERE status = 'sent' AND next_at <= now() ORDER BY seq LIMIT $1"
                " FOR UPDATE SKIP LOCKED", self.batch)
            now = datetime.now(UTC)
            retries: list[lifecycle.Retry] = []
            holds: list[lifecycle.Hold] = []
            given_up: dict[UUID, str] = {}
            failures: list[CommandFailure] = []
            trouble: dict[str, list[pacing.TroubleKind]] = defaultdict(list)
            for row in rows:
                limit = row["attempt_limit"] or self.policy.max_attempts
                retry_at = now + self.policy.backoff(row["attempts"])
                given_back = (row["answer"] == "unavailable"
                              or (row["answer"] is None and row["system"] in down))
                if given_back and row["attempts"] < self.policy.max_attempts * HOLDS_PER_ATTEMPT:
                    error = row["last_error"] if row["answer"] else f"{row['system']} is down"
                    holds.append(lifecycle.Hold(row["id"], retry_at, limit + 1, error))
                    if row["answer"]:
                        trouble[row["system"]].append("unavailable")
                    continue
                answer = row["answer"]
                trouble[row["system"]].append(answer if answer in ("failed", "unavailable") else "timeout")
                if row["answer"] is None:  # unanswered: its site's consumer is made again before the retry
                    self._site_consumers.pop((row["system"], row["site"]), None)
                kind: Literal["command_failed", "command_timeout"] = \
                    "command_failed" if row["answer"] in ("failed", "unavailable") else "command_timeout"
                reason = (f"answered failed: {row['last_error']}" if row["answer"] == "failed"
                          else f"answered unavailable {row['attempts']} times: {row['last_error']}"
                          if row["answer"] == "unavailable"
                          else f"no answer within {self.policy.answer_timeout_s:g}s")
                if given_back or row["attempts"] >= limit:
                    given_up[row["id"]] = reason
                    failures.append(CommandFailure(command_id=row["id"], kind=kind, reason=reason,
                                                   system=row["system"],
                                                   site=row["site"], journey_id=row["journey_id"],
                                                   attempts=row["attempts"]))
                else:
                    retries.append(lifecycle.Retry(row["id"], retry_at, reason))
            await lifecycle.hold_until_back(conn, holds)
            await lifecycle.schedule_retry(conn, retries)
            await lifecycle.fail_for_good(conn, given_up)
            await record_command_failures(conn, announce, failures)
            await pacing.record_trouble(conn, trouble, self.pace)
