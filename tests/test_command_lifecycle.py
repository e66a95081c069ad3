"""The owner of a command's state (`backend/commands/lifecycle.py`): each transition moves a command only
from the statuses it names, says what it moved, and leaves any other command exactly as it was.

Real Postgres; each test works in a transaction it rolls back, so no relay of another test sees its rows.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from backend.commands import lifecycle

STATUSES = ("pending", "held", "sent", "ok", "failed")
LATER = datetime.now(UTC) + timedelta(hours=1)


@pytest.fixture
async def conn(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        try:
            yield connection
        finally:
            await transaction.rollback()


async def command_in(conn: asyncpg.Connection, status: str) -> asyncpg.Record:
    """A command written as the outbox writes it (a system of its own), brought to `status` by the
    lifecycle's own transitions."""
    command_id, system = uuid.uuid4(), f"lifecycle-{uuid.uuid4().hex[:8]}"
    await conn.execute(
        "INSERT INTO commands (id, rule, system, command, journey_id, site, data, refs)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) ON CONFLICT (id) DO NOTHING",
        command_id, "lifecycle-test", system, "record.push", uuid.uuid4(), "north",
        '{"rule": "lifecycle-test"}', ["ref-1"])
    if status == "held":
        assert await lifecycle.hold_for_down_systems(conn, [system]) == 1
    if status in ("sent", "ok", "failed"):
        assert await lifecycle.mark_sent(conn, [command_id], 3600) == [command_id]
    if status == "ok":
        ok = lifecycle.Answer(command_id, system, "ok", None)
        assert await lifecycle.settle(conn, [ok]) == [command_id]
    if status == "failed":
        assert await lifecycle.fail_for_good(conn, {command_id: "no answer within 30s"}) == [command_id]
    row = await stored(conn, command_id)
    assert row["status"] == status
    return row


async def stored(conn: asyncpg.Connection, command_id: uuid.UUID) -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM commands WHERE id = $1", command_id)


Move = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable[Any]]

# each transition, applied to one command, with what it returns when it refuses
TRANSITIONS: dict[str, tuple[Move, tuple[str, ...], Any]] = {
    "hold_for_down_systems": (lambda c, r: lifecycle.hold_for_down_systems(c, [r["system"]]), ("pending",),
                              0),
    "mark_sent": (lambda c, r: lifecycle.mark_sent(c, [r["id"]], 3600), ("pending", "held"), []),
    "settle_ok": (lambda c, r: lifecycle.settle(c, [lifecycle.Answer(r["id"], r["system"], "ok", None)]),
                  ("pending", "held", "sent", "failed"), []),
    "schedule_retry": (lambda c, r: lifecycle.schedule_retry(c, [lifecycle.Retry(r["id"], LATER, "failed")]),
                       ("sent",), []),
    "hold_until_back": (lambda c, r: lifecycle.hold_until_back(
        c, [lifecycle.Hold(r["id"], LATER, 6, "down")]), ("sent",), []),
    "fail_for_good": (lambda c, r: lifecycle.fail_for_good(c, {r["id"]: "answered failed"}), ("sent",), []),
    "requeue_for_retry": (lambda c, r: lifecycle.requeue_for_retry(c, r["id"]), ("failed",), False),
    "abandon": (lambda c, r: lifecycle.abandon(c, r["id"]), ("pending", "held"), False),
}
ILLEGAL = [(name, status) for name, (_, allowed, _) in TRANSITIONS.items() for status in STATUSES
           if status not in allowed]
LEGAL = [(name, status) for name, (_, allowed, _) in TRANSITIONS.items() for status in allowed]


@pytest.mark.parametrize(("transition", "status"), ILLEGAL, ids=[f"{t}-from-{s}" for t, s in ILLEGAL])
async def test_an_illegal_move_changes_nothing_and_says_so(conn: asyncpg.Connection, transition: str,
                                                           status: str) -> None:
    move, _, refused = TRANSITIONS[transition]
    before = await command_in(conn, status)
    assert await move(conn, before) == refused
    assert dict(await stored(conn, before["id"])) == dict(before)


@pytest.mark.parametrize(("transition", "status"), LEGAL, ids=[f"{t}-from-{s}" for t, s in LEGAL])
async def test_a_legal_move_changes_the_status_and_says_so(conn: asyncpg.Connection, transition: str,
                                                           status: str) -> None:
    move, _, refused = TRANSITIONS[transition]
    before = await command_in(conn, status)
    moved = await move(conn, before)
    assert moved != refused and moved in (1, [before["id"]], True)
    after = await stored(conn, before["id"])
    assert after["status"] != before["status"]


async def test_settling_an_ok_command_again_keeps_its_first_answer(conn: asyncpg.Connection) -> None:
    settled = await command_in(conn, "ok")
    for answer in ("ok", "failed", "unavailable"):
        assert await lifecycle.settle(conn, [lifecycle.Answer(settled["id"], settled["system"], answer,
                                                              "late")]) == []
    assert dict(await stored(conn, settled["id"])) == dict(settled)


async def test_only_the_system_a_command_went_to_may_answer_it(conn: asyncpg.Connection) -> None:
    sent = await command_in(conn, "sent")
    assert await lifecycle.settle(conn, [lifecycle.Answer(sent["id"], "another-system", "ok", None)]) == []
    assert dict(await stored(conn, sent["id"])) == dict(sent)


async def test_a_failed_answer_is_noted_on_a_sent_command_for_the_relay(conn: asyncpg.Connection) -> None:
    sent = await command_in(conn, "sent")
    failed = lifecycle.Answer(sent["id"], sent["system"], "failed", "busy")
    assert await lifecycle.settle(conn, [failed]) == []
    after = await stored(conn, sent["id"])
    assert (after["status"], after["answer"], after["last_error"]) == ("sent", "failed", "busy")
    assert after["next_at"] < sent["next_at"]  # due now: the relay acts on it at once


async def test_a_retried_failure_gets_one_attempt_more(conn: asyncpg.Connection) -> None:
    failed = await command_in(conn, "failed")
    assert await lifecycle.requeue_for_retry(conn, failed["id"])
    after = await stored(conn, failed["id"])
    assert (after["status"], after["attempt_limit"]) == ("pending", failed["attempts"] + 1)
    assert not await lifecycle.requeue_for_retry(conn, failed["id"])  # the same retry again: already pending


def test_no_module_but_the_owner_updates_commands() -> None:
    root = Path(__file__).resolve().parents[1]
    owner = root / "backend" / "commands" / "lifecycle.py"
    writers = [str(path.relative_to(root)) for package in ("backend", "switchboard")
               for path in sorted((root / package).rglob("*.py"))
               if path != owner and re.search(r"\bUPDATE\s+commands\b", path.read_text(), re.IGNORECASE)]
    assert writers == [], f"only backend/commands/lifecycle.py changes a command's state: {writers}"
    assert re.search(r"\bUPDATE\s+commands\b", owner.read_text())  # the rule still looks for the right words
