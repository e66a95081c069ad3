"""The one writer of a command's state: every status change of a `commands` row is a transition here.

    pending ──mark_sent──▶ sent ──settle(ok)──▶ ok        (an `ok` answer settles any command not yet ok)
    pending ──hold_for_down_systems──▶ held ──mark_sent──▶ sent
    sent ──schedule_retry──▶ pending    sent ──hold_until_back──▶ held    sent ──fail_for_good──▶ failed
    failed ──requeue_for_retry──▶ pending                   pending, held ──abandon──▶ failed
    failed, pending/held after a failed or unavailable answer ──resend──▶ pending, due now

`mark_sent` and `settle` also keep each attempt and its answer in `command_attempts`.
Each transition is one statement whose WHERE clause names the statuses it may leave, so a move from any
other status changes nothing; each says what it moved (the ids, a count or a bool). Commands are written
by the outbox (`apply_events`, reconciliation's `push_command`, a floor action in backend/sites/actions.py)
and purged by retention; nothing else updates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

import asyncpg


class Answer(NamedTuple):
    """A connector's `command.result`: `ok`, `failed` or `unavailable`, from the system that sent it, for the
    attempt its id names (`result-<command id>-<attempt>`; None when it names none)."""
    command_id: UUID
    system: str
    status: str
    error: str | None
    attempt: int | None = None


class Retry(NamedTuple):
    """A sent command to try again at `due_at`, showing `error` meanwhile."""
    command_id: UUID
    due_at: datetime
    error: str


class Hold(NamedTuple):
    """A sent command its system could not take: held until `due_at`, with `attempt_limit` raised by one so
    that the attempt does not count."""
    command_id: UUID
    due_at: datetime
    attempt_limit: int
    error: str


def _ids(rows: list[asyncpg.Record]) -> list[UUID]:
    return [r["id"] for r in rows]


HOLD = ("UPDATE commands SET status = 'held', updated_at = now()"
        " WHERE status = 'pending' AND system = ANY($1::text[])")


async def hold_for_down_systems(conn: asyncpg.Connection, systems: Sequence[str]) -> int:
    """pending → held for the commands of systems that are down; how many."""
    status = await conn.execute(HOLD, list(systems))
    return int(status.split()[-1])


async def mark_sent(conn: asyncpg.Connection, ids: Sequence[UUID], answer_timeout_s: float) -> list[UUID]:
    """pending/held → sent, one attempt more, its answer due within `answer_timeout_s`; the ids moved."""
    if not ids:
        return []
    return _ids(await conn.fetch(
        # sent_at on the clock, not at the transaction's start: a resend asked for while this transaction
        # ran is stamped before it, and resend compares the two
        "WITH sent AS (UPDATE commands SET status = 'sent', attempts = attempts + 1, answer = NULL,"
        " sent_at = clock_timestamp(), next_at = now() + make_interval(secs => $2), updated_at = now()"
        " WHERE id = ANY($1::uuid[]) AND status IN ('pending', 'held') RETURNING id, attempts),"
        " logged AS (INSERT INTO command_attempts (command_id, attempt) SELECT id, attempts FROM sent"
        " ON CONFLICT DO NOTHING) SELECT id FROM sent",
        list(ids), answer_timeout_s))


async def settle(conn: asyncpg.Connection, answers: Sequence[Answer]) -> list[UUID]:
    """Records answers, at most one per command; the ids this settled `ok`.

    `ok` settles a command that is not `ok` yet, whichever attempt it answers; `failed`/`unavailable` on a
    `sent` command is noted for the relay (which owns the delivery policy) and makes it due now, unless it
    answers an earlier attempt than the one in flight (a late answer says nothing of that one). Only the
    system a command went to may answer it. An answer can overtake the commit of its own publication (the
    relay publishes while holding the row), so the condition also accepts a row that still looks unsent:
    the update then waits for the relay's commit and is re-checked against the committed `sent` row. A
    `failed`/`unavailable` answer for a row that is not `sent` answers an earlier attempt: it changes
    nothing.
    """
    if not answers:
        return []
    settled = await conn.fetch(
        """
        UPDATE commands c SET
            status = CASE WHEN a.status = 'ok' THEN 'ok' ELSE c.status END,
            answer = CASE WHEN a.status = 'ok' THEN NULL WHEN c.status = 'sent' THEN a.status ELSE c.answer
                END,
            last_error = CASE WHEN a.status <> 'ok' AND c.status = 'sent' THEN coalesce(a.error, a.status)
                              ELSE c.last_error END,
            next_at = CASE WHEN a.status <> 'ok' AND c.status = 'sent' THEN now() ELSE c.next_at END,
            updated_at = now()
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[]) AS a(id, system, status, error,
            attempt)
        WHERE c.id = a.id AND c.system = a.system AND c.status <> 'ok' AND (a.status = 'ok' OR c.status <>
            'failed' AND (a.attempt IS NULL OR a.attempt >= c.attempts))
        RETURNING c.id, c.status, least(a.attempt, c.attempts) AS attempts,
            a.status AS answer, a.error
        """,
        [a.command_id for a in answers], [a.system for a in answers], [a.status for a in answers],
        [a.error for a in answers], [a.attempt for a in answers],
    )
    # A statement of its own: it sees the attempt the relay committed while the update above waited for it.
    # The attempt in flight keeps the first answer it got.
    await conn.execute(
        "UPDATE command_attempts t SET answer = s.answer, error = s.error, answered_at = now()"
        " FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[]) AS s(id, attempt, answer, error)"
        " WHERE t.command_id = s.id AND t.attempt = s.attempt AND t.answer IS NULL",
        [r["id"] for r in settled], [r["attempts"] for r in settled], [r["answer"] for r in settled],
        [r["error"] for r in settled])
    return [r["id"] for r in settled if r["status"] == "ok"]


async def schedule_retry(conn: asyncpg.Connection, retries: Sequence[Retry]) -> list[UUID]:
    """sent → pending (backoff) after a `failed` answer or none, attempts left; the ids moved."""
    if not retries:
        return []
    return _ids(await conn.fetch(
        "UPDATE commands c SET status = 'pending', next_at = r.due_at, last_error = r.error, answer = NULL,"
        " updated_at = now() FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS r(id, due_at, error)"
        " WHERE c.id = r.id AND c.status = 'sent' RETURNING c.id",
        [r.command_id for r in retries], [r.due_at for r in retries], [r.error for r in retries]))


async def hold_until_back(conn: asyncpg.Connection, holds: Sequence[Hold]) -> list[UUID]:
    """sent → held when the system could not take the command (answered `unavailable`, or went down
    without answering): it goes out again when the system is back, without using up an attempt."""
    if not holds:
        return []
    return _ids(await conn.fetch(
        "UPDATE commands c SET status = 'held', next_at = h.due_at, attempt_limit = h.attempt_limit,"
        " last_error = h.error, answer = NULL, updated_at = now()"
        " FROM unnest($1::uuid[], $2::timestamptz[], $3::int[], $4::text[]) AS h(id, due_at, attempt_limit,"
        " error) WHERE c.id = h.id AND c.status = 'sent' RETURNING c.id",
        [h.command_id for h in holds], [h.due_at for h in holds], [h.attempt_limit for h in holds],
        [h.error for h in holds]))


async def fail_for_good(conn: asyncpg.Connection, reasons: dict[UUID, str]) -> list[UUID]:
    """sent → failed after the last attempt (the caller records the failure); the ids moved."""
    if not reasons:
        return []
    return _ids(await conn.fetch(
        "UPDATE commands c SET status = 'failed', next_at = now(), last_error = f.reason, answer = NULL,"
        " updated_at = now() FROM unnest($1::uuid[], $2::text[]) AS f(id, reason)"
        " WHERE c.id = f.id AND c.status = 'sent' RETURNING c.id", list(reasons), list(reasons.values())))


async def requeue_for_retry(conn: asyncpg.Connection, command_id: UUID | str) -> bool:
    """failed → pending, due now, allowed one attempt more (staff retried its failure); whether it moved."""
    return await conn.fetchval(
        "UPDATE commands SET status = 'pending', next_at = now(), attempt_limit = attempts + 1, answer ="
        " NULL, updated_at = now() WHERE id = $1::uuid AND status = 'failed' RETURNING true",
        str(command_id)) is not None


async def abandon(conn: asyncpg.Connection, command_id: UUID | str) -> bool:
    """pending/held → failed (staff discarded its failure while it was being re-sent); whether it moved."""
    return await conn.fetchval(
        "UPDATE commands SET status = 'failed', last_error = 'discarded', updated_at = now()"
        " WHERE id = $1::uuid AND status IN ('pending', 'held') RETURNING true", str(command_id)) is not None


async def resend(conn: asyncpg.Connection, command_id: UUID) -> bool:
    """→ pending, due now, for a command that failed for good (allowed one attempt more) or whose last
    attempt was answered `failed`/`unavailable` and that waits to be tried again; whether it moved.

    A resend already asked for and not yet published matches nothing, so concurrent resends of one command
    move it once and it goes out once."""
    return await conn.fetchval(
        """
        UPDATE commands c SET status = 'pending', next_at = now(), answer = NULL,
            attempt_limit = CASE WHEN c.status = 'failed' THEN c.attempts + 1 ELSE c.attempt_limit END,
            resend_requested_at = clock_timestamp(), updated_at = now()
        WHERE c.id = $1 AND (c.resend_requested_at IS NULL OR c.resend_requested_at < c.sent_at)
          AND (c.status = 'failed' OR c.status IN ('pending', 'held') AND EXISTS (
              SELECT 1 FROM command_attempts t WHERE t.command_id = c.id AND t.attempt = c.attempts
                AND t.answer IN ('failed', 'unavailable')))
        RETURNING true
        """, command_id) is not None


async def follow_merges(conn: asyncpg.Connection, olds: Sequence[UUID], news: Sequence[UUID]) -> None:
    """Commands of journeys a link absorbed belong to the journeys that absorbed them (`olds[i]` into
    `news[i]`): a journey's commands to one system go out in order, the absorbed one's among them."""
    await conn.execute("UPDATE commands c SET journey_id = m.new"
                       " FROM unnest($1::uuid[], $2::uuid[]) AS m(old, new) WHERE c.journey_id = m.old",
                       list(olds), list(news))
