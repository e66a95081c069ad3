"""A connector's snapshot answer is untrusted: paging that never ends, or a record Switchboard cannot keep,
ends the read with its reason (the run is then `unreachable`), never a run that hangs for ever or fails at
the database on every attempt. Real NATS (the module's own): the connector is a plain responder on its
snapshot subject."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from backend.reconciliation.snapshot_client import SnapshotClient, Unreachable
from connectors.sdk.connector import Connector
from connectors.sdk.runtime import ConnectorRuntime
from switchboard import bus
from switchboard.snapshots import (
    BAD_REQUEST,
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    SnapshotRecord,
    SnapshotRequest,
    decode_request,
    snapshot_subject,
)
from tests.support.waits import eventually
from tools.embedded import EmbeddedNats

DAY = date(2026, 12, 1)
Answer = Callable[[str | None], dict[str, Any]]  # the page for a request's cursor


def record(ref: str, **changes: Any) -> dict[str, Any]:
    return {"ref": ref, "site": "north", "stage": "waiting", "updated_at": "2026-12-01T09:00:00Z", **changes}


def page(records: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {"system": "x", "site": "north", "day": DAY.isoformat(), "records": records,
            "next_cursor": next_cursor, "as_of": datetime.now(UTC).isoformat()}


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A NATS of the module's own: the answers here are made up, and no other connector or reconciler may
    answer or hear them (a seed system's snapshot subject among them)."""
    server = EmbeddedNats(tmp_path_factory.mktemp("snapshot-nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nc(own_nats: EmbeddedNats) -> AsyncIterator[NATS]:
    connection = await bus.connect(own_nats.url, "test-snapshots", creds=own_nats.creds)
    yield connection
    await connection.close()


async def read_from(nc: NATS, system: str, answer: Answer, max_records: int = 50,
                    skipped: dict[str, str] | None = None) -> list[Any]:
    requests: list[str | None] = []

    async def reply(msg: Msg) -> None:
        cursor = decode_request(msg.data).cursor
        requests.append(cursor)
        await msg.respond(msgspec.json.encode(answer(cursor)))

    subscription = await nc.subscribe(snapshot_subject(system), cb=reply)
    try:
        return await SnapshotClient(nc, 2.0, max_records).day(system, "north", DAY, skipped)
    finally:
        await subscription.unsubscribe()


async def test_a_well_paged_snapshot_is_read_whole(nc, uid):
    pages = {None: page([record(f"s{uid}:A"), record(f"s{uid}:B")], f"s{uid}:B"),
             f"s{uid}:B": page([record(f"s{uid}:C")], None)}
    records = await read_from(nc, f"s{uid}", lambda cursor: pages[cursor])
    assert [r.ref for r in records] == [f"s{uid}:A", f"s{uid}:B", f"s{uid}:C"]


async def test_paging_that_does_not_move_on_or_never_ends_ends_the_read(nc, uid):
    system = f"s{uid}"
    stuck = lambda cursor: page([record(f"{system}:A")], f"{system}:A")  # noqa: E731 - the same page again
    with pytest.raises(Unreachable, match="does not move its cursor on"):
        await read_from(nc, system, stuck)
    empty = lambda cursor: page([], f"{system}:{(cursor or '')}Z")  # noqa: E731 - moves on, brings nothing
    with pytest.raises(Unreachable, match="does not move its cursor on"):
        await read_from(nc, system, empty)

    def endless(cursor: str | None) -> dict[str, Any]:  # always one more record, always a next page
        after = int(cursor.rsplit("-", 1)[1]) + 1 if cursor else 0
        return page([record(f"{system}:R-{after:08d}")], f"{system}:R-{after:08d}")

    with pytest.raises(Unreachable, match="more than 50 records"):
        await read_from(nc, system, endless)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"updated_at": "9999-12-31T23:59:59-01:00"}, "outside the years 1970 to 2999"),
    ({"stage": "John.Smith"}, "look like personal data"),
    ({"links": ["crm:44770090012345"]}, "look like personal data"),
    ({"fields": {"ticket": "T\u00001"}}, "NUL"),
])
async def test_a_record_switchboard_cannot_keep_is_left_out_with_its_reason_and_the_read_goes_on(
        nc, uid, changes, reason):
    system = "queue"  # its records keep `ticket`
    bad = page([record(f"queue:ok-{uid}"), record(f"queue:bad-{uid}", **changes)], None)
    skipped: dict[str, str] = {}
    kept = await read_from(nc, system, lambda cursor: bad, skipped=skipped)
    assert [r.ref for r in kept] == [f"queue:ok-{uid}"]
    assert list(skipped) == [f"queue:bad-{uid}"] and reason in skipped[f"queue:bad-{uid}"]
    assert "John" not in str(skipped) and "4477009" not in str(skipped)


async def test_a_record_of_another_site_than_asked_is_not_taken_by_day_or_by_reference(nc, uid):
    """A connector of one site answers for it alone: a record it says is at another site is not this read's
    (taken, its site would reach the asked site's drift and a correction would move the journey there)."""
    system = f"s{uid}"
    answer = page([record(f"{system}:A"), record(f"{system}:B", site="south")], None)
    assert [r.ref for r in await read_from(nc, system, lambda cursor: answer)] == [f"{system}:A"]

    async def reply(msg: Msg) -> None:
        await msg.respond(msgspec.json.encode(answer))

    subscription = await nc.subscribe(snapshot_subject(system), cb=reply)
    try:
        found = await SnapshotClient(nc, 2.0).refs(system, "north", DAY, [f"{system}:A", f"{system}:B"])
    finally:
        await subscription.unsubscribe()
    assert list(found) == [f"{system}:A"]


async def test_references_are_read_by_reference_and_only_those_asked_for_are_taken(nc, uid):
    system = f"s{uid}"
    asked = [f"{system}:R-{n:05d}" for n in range(2500)]  # three requests of at most 1,000 references

    async def reply(msg: Msg) -> None:
        request = decode_request(msg.data)
        assert request.refs is not None
        extra = record(f"{system}:NOT-ASKED")  # a connector's answer is taken only as far as it was asked
        await msg.respond(msgspec.json.encode(page([record(request.refs[0]), extra], None)))

    subscription = await nc.subscribe(snapshot_subject(system), cb=reply)
    try:
        found = await SnapshotClient(nc, 2.0).refs(system, "north", DAY, asked)
    finally:
        await subscription.unsubscribe()
    assert sorted(found) == [asked[0], asked[1000], asked[2000]]


async def test_an_older_connector_that_refuses_references_has_its_day_read_once(nc, uid):
    """Its first answer by reference came from a newer instance (a rolling upgrade): kept, and the rest
    read from the day once."""
    system = f"s{uid}"
    asked = [f"{system}:R-{n:05d}" for n in range(2500)]
    by_reference: list[None] = []
    day_reads: list[None] = []

    async def reply(msg: Msg) -> None:
        request = decode_request(msg.data)
        if request.refs is not None and by_reference:  # an older instance: it does not know `refs`, 400
            await nc.publish(msg.reply, b"", headers={ERROR_CODE_HEADER: BAD_REQUEST, ERROR_HEADER: "refs?"})
            return
        if request.refs is not None:
            by_reference.append(None)
            await msg.respond(msgspec.json.encode(page([record(request.refs[0])], None)))
            return
        day_reads.append(None)
        await msg.respond(msgspec.json.encode(page([record(asked[1005]), record(f"{system}:OTHER")], None)))

    subscription = await nc.subscribe(snapshot_subject(system), cb=reply)
    try:
        found = await SnapshotClient(nc, 2.0).refs(system, "north", DAY, asked)
    finally:
        await subscription.unsubscribe()
    assert sorted(found) == [asked[0], asked[1005]]
    assert len(day_reads) == 1  # was once per 1,000 references asked for


async def test_the_site_s_subject_is_asked_first_and_the_system_s_only_when_nobody_answers_there(nc, uid):
    """A connector limited to a site answers on `svc.snapshot.<system>.<site>` only; one that knows only the
    contract's first form answers on `svc.snapshot.<system>`."""
    system = f"s{uid}"
    asked: list[str] = []

    def responder(name: str) -> Callable[[Msg], Any]:
        async def reply(msg: Msg) -> None:
            asked.append(msg.subject)
            await msg.respond(msgspec.json.encode(page([record(f"{system}:{name}")], None)))
        return reply

    legacy = await nc.subscribe(snapshot_subject(system), cb=responder("LEGACY"))
    client = SnapshotClient(nc, 2.0)
    assert [r.ref for r in await client.day(system, "north", DAY)] == [f"{system}:LEGACY"]
    assert asked == [snapshot_subject(system)]
    north = await nc.subscribe(snapshot_subject(system, "north"), cb=responder("NORTH"))
    assert [r.ref for r in await client.day(system, "north", DAY)] == [f"{system}:NORTH"]
    assert asked[1:] == [snapshot_subject(system, "north")]
    await legacy.unsubscribe()
    await north.unsubscribe()
    with pytest.raises(Unreachable, match=f"no connector of {system} answers snapshots of north"):
        await client.day(system, "north", DAY)


class Desk(Connector):
    """A queue connector holding one record per site."""

    system = "queue"

    async def snapshot(self, site: str, day: date) -> Sequence[SnapshotRecord]:
        return [SnapshotRecord(ref=f"queue:T-{site}", site=site, updated_at=datetime.now(UTC))]


async def once_serving(client: SnapshotClient, site: str) -> list[SnapshotRecord]:
    """The connector's first answer: it serves once connected, in the background."""
    async def answered() -> list[SnapshotRecord] | None:
        try:
            return await client.day("queue", site, DAY)
        except Unreachable:
            return None

    records: list[SnapshotRecord] = await eventually(answered)
    return records


async def asked(nc: NATS, subject: str, site: str) -> Msg:
    return await nc.request(subject, msgspec.json.encode(SnapshotRequest(site=site, day=DAY)), timeout=2)


async def test_the_sdk_answers_a_site_s_request_on_that_site_s_subject_only(own_nats, nc, tmp_path: Path):
    """Whatever its subscriptions, a connector answers a request only for the site its subject names, and a
    connector limited to sites only for those: another site's request is refused, never answered."""
    async with ConnectorRuntime(Desk(), nats_url=own_nats.url, creds=own_nats.creds,
                                data_dir=tmp_path / "every-site"):
        client = SnapshotClient(nc, 2.0)
        records = await once_serving(client, "north")
        assert [r.ref for r in records] == ["queue:T-north"]
        mismatched = await asked(nc, snapshot_subject("queue", "north"), "south")
        assert (mismatched.headers or {}).get(ERROR_CODE_HEADER) == BAD_REQUEST
    async with ConnectorRuntime(Desk(), nats_url=own_nats.url, creds=own_nats.creds, sites=("north",),
                                data_dir=tmp_path / "north-only"):
        client = SnapshotClient(nc, 2.0)
        records = await once_serving(client, "north")
        assert [r.ref for r in records] == ["queue:T-north"]
        with pytest.raises(Unreachable, match="no connector of queue answers snapshots of south"):
            await client.day("queue", "south", DAY)
