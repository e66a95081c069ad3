"""Reconciliation (CONTRACT sections 5 and 6) against the simulated systems as real connectors on the test
NATS.

Each test keeps its own site; drift is made the way it happens upstream: a record changed by hand in
the system (no event), a record Switchboard never heard of, a reference the system lost.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from nats.js import JetStreamContext

from backend.reconciliation.compare import Finding
from backend.reconciliation.replay import replay_command_id
from backend.reconciliation.runs import store_findings
from connectors.sim.appointments import Appointments
from connectors.sim.core import Core
from connectors.sim.crm import Crm
from connectors.sim.queue import Queue
from connectors.sim.system import Record
from tests.support.backends import Stack, own_stack
from tests.support.database import blocked_by, refusing_site
from tests.support.events import cloud_event, publish, publish_as_backend
from tests.support.fallbacks import act, acted, start
from tests.support.live import connect, receive_until, subscribe
from tests.support.simulators import journey_of, running, still_queue, waiting
from tests.support.waits import eventually

RECONCILING = {"SWITCHBOARD_RECONCILE_INTERVAL_S": "0", "SWITCHBOARD_RECONCILE_TICK_S": "0.3"}


@pytest.fixture
async def stack(server_urls: dict[str, str], workdir: Path) -> AsyncIterator[Stack]:
    """A backend of the test's own on its own NATS and database: the queue system's commands, pace and
    heartbeats are this test's alone, never paced behind another test's. Runs on demand only, repairs
    checked every 0.3 s."""
    async with own_stack(server_urls["database_url"], workdir, RECONCILING) as stack:
        yield stack


@pytest.fixture
async def rapi(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=15) as client:
        yield client


@pytest.fixture
def js(stack: Stack) -> JetStreamContext:
    """The test's own JetStream, in place of the session's."""
    return stack.js


@pytest.fixture
def pool(stack: Stack) -> asyncpg.Pool:
    """The owner's view of the test's own database, in place of the session's."""
    return stack.pool


def bearer(token, role: str, sites: list[str] | str = "*") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, sites)}"}


async def run(api: httpx.AsyncClient, headers: dict[str, str], system: str, site: str) -> dict[str, Any]:
    """An on-demand run, waited for."""
    response = await api.post("/api/v1/reconciliation/runs", json={"system": system, "site": site,
                                                                   "reason": "checking"}, headers=headers)
    assert response.status_code == 202, response.text
    run_id = response.json()["run"]["id"]

    async def finished():
        found = (await api.get(f"/api/v1/reconciliation/runs/{run_id}", headers=headers)).json()
        return found if found["status"] != "running" else None

    return await eventually(finished)


async def drift(api: httpx.AsyncClient, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/reconciliation/drift", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def settled(api: httpx.AsyncClient, headers: dict[str, str], drift_id: int) -> dict[str, Any]:
    async def done():
        item = (await api.get(f"/api/v1/reconciliation/drift/{drift_id}", headers=headers)).json()
        return item if item["status"] != "repairing" else None

    return await eventually(done)


async def ended_and_replayed(api: httpx.AsyncClient, headers: dict[str, str], fallback_id: int,
                             reason: str) -> dict[str, Any]:
    """End a fallback and wait for its replay to end it; the fallback as it then stands."""
    ended = await api.post(f"/api/v1/fallbacks/{fallback_id}/end", json={"reason": reason}, headers=headers)
    assert ended.status_code == 200, ended.text

    async def replayed():
        found = (await api.get(f"/api/v1/fallbacks/{fallback_id}", headers=headers)).json()
        return found if found["status"] == "ended" else None

    return await eventually(replayed)


async def renumbered(api: httpx.AsyncClient, headers: dict[str, str], queue: Queue,
                     site: str) -> tuple[str, dict[str, Any]]:
    """A ticket of the site the queue renumbered by hand (no event), found by a run: its reference and its
    open drift item."""
    ticket = await queue.arrive(site, "licence", [])
    await eventually(lambda: waiting(api, headers, ticket))
    queue.records[ticket].fields["ticket"] = "T-RENUMBERED"
    assert (await run(api, headers, "queue", site))["drifted"] == 1
    [item] = await drift(api, headers, site=site, status="open")
    return ticket, item


def one(items: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [i for i in items if all(i[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, items)
    return found[0]


async def test_silent_drift_is_found_previewed_repaired_both_ways_verified_and_a_second_run_is_clean(
        rapi, js, stack, token, uid, tmp_path):
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    appointments, queue, core = Appointments(), still_queue(site), Core()
    async with running(stack.settings, tmp_path, appointments, queue, core):
        slot = datetime.now(UTC) + timedelta(hours=1)
        booking = await appointments.book(site, "passport", "web", slot, [])
        ticket = await queue.arrive(site, "passport", [booking])
        await core.check(site, [booking], passed=True)
        ghost = f"queue:T-GHOST-{uid}"  # a ticket Switchboard heard of that the queue system has lost
        await publish(js, cloud_event("customer.arrived", ghost, {"site": site}))

        async def known():  # the ticket's journey once both queue events and the check are applied
            journey = await waiting(rapi, sre, ticket)
            ghost_journey = await journey_of(rapi, sre, ghost)
            return journey if journey and journey["eligibility"] == "passed" and ghost_journey else None

        await eventually(known)
        # silent drift: a counter called the ticket, core re-assessed, a booking was keyed in by hand
        queue.records[ticket].stage = "called"
        queue.records[ticket].fields["counter"] = "C2"
        assert core.drift_one() is not None
        assert core.records[next(iter(core.records))].fields["eligibility"] == "failed"
        hand_made = f"appointments:A-HAND-{uid}"
        now = datetime.now(UTC)
        appointments.records[hand_made] = Record(ref=hand_made, site=site, created_at=now, updated_at=now,
                                                 stage="booked", fields={"service": "tax",
                                                                         "slot_start": slot.isoformat()})

        for system, drifted in (("queue", 3), ("core", 1), ("appointments", 1)):
            finished = await run(rapi, sre, system, site)
            assert finished["status"] == "done" and finished["drifted"] == drifted, (
                finished, [(i["system"], i["ref"], i["kind"], i["field"], i["ours"], i["theirs"])
                           for i in await drift(rapi, sre, site=site)])
            assert finished["checked"] >= 1 and finished["duration_s"] is not None
        items = await drift(rapi, sre, site=site, status="open")
        stage = one(items, ref=ticket, field="stage")
        assert (stage["kind"], stage["ours"], stage["theirs"], stage["proposed_action"]) == (
            "state_mismatch", "waiting", "called", "accept_source")
        one(items, ref=ticket, field="counter", ours=None, theirs="C2")
        lost = one(items, ref=ghost, kind="missing_there")
        assert lost["proposed_action"] == "push_ours" and lost["ours"]["stage"] == "arrived"
        eligibility = one(items, field="eligibility", ours="passed", theirs="failed")
        one(items, ref=hand_made, kind="missing_here")

        # preview says what each repair changes before anything does
        preview = (await rapi.post(f"/api/v1/reconciliation/drift/{stage['id']}/resolve",
                                   json={"action": "accept_source", "dry_run": True}, headers=sre)).json()
        assert preview["outcome"] == "preview" and preview["plan"]["possible"]
        assert (preview["plan"]["from"], preview["plan"]["to"], preview["plan"]["changes"]) == (
            "waiting", "called", "switchboard")

        # accept_source: a corrective event from /switchboard, applied, then verified by a new read
        accepted = await rapi.post(f"/api/v1/reconciliation/drift/{stage['id']}/resolve",
                                   json={"action": "accept_source", "reason": "the counter called it"},
                                   headers=sre)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["status"] == "repairing" and len(accepted.json()["events"]) == 1
        verified = await settled(rapi, sre, stage["id"])
        assert verified["status"] == "resolved" and verified["last_check"]["found"] == "in order"
        journey = await journey_of(rapi, sre, ticket)
        assert journey is not None and journey["stage"] == "called" and journey["counter"] == "C2"

        # push_ours: record.push through the outbox; verified after the command's ok
        for item in (lost, eligibility):
            pushed = await rapi.post(f"/api/v1/reconciliation/drift/{item['id']}/resolve",
                                     json={"action": "push_ours"}, headers=sre)
            assert pushed.status_code == 200 and pushed.json()["command_id"], pushed.text
        for item in (lost, eligibility):
            assert (await settled(rapi, sre, item["id"]))["status"] == "resolved"
        assert queue.records[ghost].stage == "arrived"
        assert core.records[next(iter(core.records))].fields["eligibility"] == "passed"

        # the bulk form acts on exactly the items its preview showed
        bulk = (await rapi.post("/api/v1/reconciliation/drift/preview",
                                json={"filter": {"site": site, "system": "appointments"}},
                                headers=sre)).json()
        assert bulk["matched"] == bulk["acting"] == 1
        assert bulk["plans"][0]["ref"] == hand_made and bulk["plans"][0]["action"] == "accept_source"
        done = await rapi.post("/api/v1/reconciliation/drift/resolve", json={"selection": bulk["selection"]},
                               headers=sre)
        assert done.status_code == 200 and done.json()["acted"] == 1, done.text
        assert (await settled(rapi, sre, bulk["plans"][0]["drift_id"]))["status"] == "resolved"
        created = await journey_of(rapi, sre, hand_made)
        assert created is not None and created["stage"] == "booked" and created["service"] == "tax"

        for system in ("queue", "core", "appointments"):
            again = await run(rapi, sre, system, site)
            assert again["status"] == "done" and again["drifted"] == 0, again
        assert await drift(rapi, sre, site=site, status="open") == []  # the counter item closed with the run
        audit = (await rapi.get("/api/v1/audit", params={"actor": "test-sre"},
                                headers=bearer(token, "admin"))).json()
        actions = {(e["action"], e["target"]) for e in audit["items"]}
        assert ("drift.resolve", f"drift:{stage['id']}") in actions
        assert ("reconciliation.run", f"reconciliation:queue:{site}:{datetime.now(UTC).date()}") in actions


async def test_an_unreachable_system_gives_an_unreachable_run_and_no_false_drift(rapi, js, stack, token, uid,
                                                                                tmp_path):
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        ticket = await queue.arrive(site, "licence", [])
        await eventually(lambda: waiting(rapi, sre, ticket))
        queue.faults.outage = True
        finished = await run(rapi, sre, "queue", site)
        assert finished["status"] == "unreachable" and "503" in finished["error"], finished
        assert finished["checked"] == 0 and await drift(rapi, sre, site=site) == []
        statuses = await rapi.get("/api/v1/reconciliation", params={"site": site}, headers=sre)
        [status] = statuses.json()["items"]
        assert status["reachable"] is False and status["last_run"]["id"] == finished["id"]
    nobody = await run(rapi, sre, "crm", site)  # no connector at all answers
    assert nobody["status"] == "unreachable"


async def test_a_record_switchboard_cannot_keep_is_skipped_and_the_run_compares_the_others(
        rapi, stack, token, uid, tmp_path):
    """One ticket's number nested 500 levels deep (redacting it recursed past Python's limit) and a record
    linked to what looks like a phone number: each is left out, neither missing nor in order, and the run
    ends `done` with the good record's drift found."""
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        renumbered, unreadable = [await queue.arrive(site, "licence", []) for _ in range(2)]
        for ticket in (renumbered, unreadable):
            await eventually(partial(waiting, rapi, sre, ticket))
        queue.records[renumbered].fields["ticket"] = "T-RENUMBERED"
        deep: Any = "T-DEEP"
        for _ in range(500):
            deep = [deep]
        queue.records[unreadable].fields["ticket"] = deep
        personal = f"queue:T-PERSONAL-{uid}"
        now = datetime.now(UTC)
        queue.records[personal] = Record(ref=personal, site=site, created_at=now, updated_at=now,
                                         stage="waiting", links=["crm:44770090012345"],
                                         fields={"ticket": "T-PERSONAL"})
        finished = await run(rapi, sre, "queue", site)
    assert finished["status"] == "done", finished
    assert (finished["checked"], finished["drifted"]) == (1, 1), finished
    [item] = await drift(rapi, sre, site=site)
    assert (item["ref"], item["field"], item["theirs"]) == (renumbered, "ticket", "T-RENUMBERED")


async def test_a_ticket_number_of_digits_only_is_the_same_in_the_snapshot_as_in_its_event(
        rapi, stack, token, uid, tmp_path):
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    digits = f"{int(uid, 16) % 10**10:010d}"  # as random hex is, one ticket in a hundred: no phone number
    queue.new_ref = lambda: f"queue:T-{digits}"  # type: ignore[method-assign]
    async with running(stack.settings, tmp_path, queue):
        ticket = await queue.arrive(site, "licence", [])
        assert (await eventually(lambda: waiting(rapi, sre, ticket)))["ticket"] == f"T-{digits}"
        finished = await run(rapi, sre, "queue", site)
        assert (finished["checked"], finished["drifted"]) == (1, 0), await drift(rapi, sre, site=site)


async def test_ignore_needs_a_reason_and_ignored_drift_is_not_raised_again(rapi, stack, token, uid, tmp_path):
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        _, item = await renumbered(rapi, sre, queue, site)
        url = f"/api/v1/reconciliation/drift/{item['id']}/resolve"
        refused = await rapi.post(url, json={"action": "ignore"}, headers=sre)
        assert refused.status_code == 400 and "needs a reason" in refused.text
        too_short = await rapi.post(url, json={"action": "ignore", "reason": "x"}, headers=sre)
        assert too_short.status_code == 400
        ignored = await rapi.post(url, json={"action": "ignore", "reason": "renumbered on purpose"},
                                  headers=sre)
        assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
        twice = await rapi.post(url, json={"action": "ignore", "reason": "again"}, headers=sre)
        assert twice.status_code == 409
        assert (await run(rapi, sre, "queue", site))["drifted"] == 0
        assert await drift(rapi, sre, site=site, status="open") == []


async def test_a_run_leaves_another_site_s_journey_to_that_site_s_run(rapi, stack, token, uid, tmp_path):
    """A ticket the queue now files at another site (moved by hand, no event) still belongs to its journey's
    site: the other site's run neither shows that journey's values nor offers to repair it."""
    home, away = f"rec-{uid}", f"rec-{uid}-away"
    queue = still_queue(home, away)
    async with running(stack.settings, tmp_path, queue):
        ticket = await queue.arrive(home, "licence", [])
        journey = await eventually(lambda: waiting(rapi, bearer(token, "sre", [home]), ticket))
        queue.records[ticket].site = away
        queue.records[ticket].fields["ticket"] = "T-RENUMBERED"
        away_run = await run(rapi, bearer(token, "sre", [away]), "queue", away)
        assert (away_run["checked"], away_run["drifted"]) == (0, 0)
        assert await drift(rapi, bearer(token, "sre", "*"), site=away) == []
        home_run = await run(rapi, bearer(token, "sre", [home]), "queue", home)
        assert (home_run["checked"], home_run["drifted"]) == (1, 1)
        [item] = await drift(rapi, bearer(token, "sre", [home]), site=home)
        assert (item["ref"], item["journey_id"], item["kind"]) == (ticket, journey["id"], "missing_there")


async def test_a_journey_moved_since_the_run_is_not_repaired_from_the_old_site_s_record(
        rapi, js, stack, token, uid, tmp_path):
    """The run at home read a renumbered ticket; then the queue moved the customer to another site. Taking
    home's record now would date it after the move and outrank it, and pushing ours would write to home's
    record of a journey home no longer holds: both are refused, saying where the journey is; ignoring still
    closes the item."""
    home, away = f"rec-{uid}", f"rec-{uid}-away"
    sre = bearer(token, "sre", [home])
    queue = still_queue(home, away)
    async with running(stack.settings, tmp_path, queue):
        ticket, item = await renumbered(rapi, sre, queue, home)
    await publish(js, cloud_event("customer.arrived", ticket, {"site": away}))

    async def moved():
        journey = await journey_of(rapi, bearer(token, "sre", "*"), ticket)
        return journey and journey["site"] == away

    await eventually(moved)
    for action in ("accept_source", "push_ours"):
        refused = await rapi.post(f"/api/v1/reconciliation/drift/{item['id']}/resolve",
                                  json={"action": action}, headers=sre)
        assert refused.status_code == 409 and f"the journey is at {away} now" in refused.text, refused.text
    ignored = await rapi.post(f"/api/v1/reconciliation/drift/{item['id']}/resolve",
                              json={"action": "ignore", "reason": "moved to another site"}, headers=sre)
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored", ignored.text


async def test_a_record_whose_links_lead_to_another_site_s_journey_is_not_taken_from_this_site(
        rapi, stack, token, uid, tmp_path):
    """A ticket home's queue holds that Switchboard never heard of, linked to a journey of the other site.
    Its corrective events would speak for the whole queue system, and their links would join that journey
    and move it here: neither a person of home nor the preview offers it, 409, nothing published."""
    home, away = f"rec-{uid}", f"rec-{uid}-away"
    sre = bearer(token, "sre", [home])
    queue = still_queue(home, away)
    async with running(stack.settings, tmp_path, queue):
        theirs = await queue.arrive(away, "licence", [])
        await eventually(lambda: waiting(rapi, bearer(token, "sre", [away]), theirs))
        linked = f"queue:T-LINKED-{uid}"
        now = datetime.now(UTC)
        queue.records[linked] = Record(ref=linked, site=home, created_at=now, updated_at=now, stage="waiting",
                                       links=[theirs], fields={"ticket": f"T-LINKED-{uid}",
                                                               "service": "licence"})
        assert (await run(rapi, sre, "queue", home))["drifted"] == 1
    [item] = await drift(rapi, sre, site=home, status="open")
    assert (item["ref"], item["kind"], item["proposed_action"]) == (linked, "missing_here", "accept_source")
    elsewhere = "its links lead to journeys at another site: reconcile there, or ignore"
    preview = (await rapi.post("/api/v1/reconciliation/drift/preview", json={"filter": {"site": home}},
                               headers=sre)).json()
    assert (preview["matched"], preview["acting"]) == (1, 0)
    assert not preview["plans"][0]["possible"] and preview["plans"][0]["note"] == elsewhere
    refused = await rapi.post(f"/api/v1/reconciliation/drift/{item['id']}/resolve",
                              json={"action": "accept_source"}, headers=sre)
    assert refused.status_code == 409 and elsewhere in refused.text, refused.text
    everywhere = bearer(token, "sre", "*")
    assert await journey_of(rapi, everywhere, linked) is None
    journey = await journey_of(rapi, everywhere, theirs)
    assert journey is not None and journey["site"] == away, journey
    assert (await drift(rapi, sre, site=home))[0]["status"] == "open"


async def test_a_bulk_resolve_acts_on_none_of_its_items_when_one_is_resolved_by_hand_meanwhile(
        rapi, stack, token, uid, tmp_path):
    """One of the previewed items resolved by hand while the bulk resolve waits for it: the bulk acts on none
    (409), never on those before it and then refuses. The hand holds the item's row until the bulk waits."""
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        tickets = [await queue.arrive(site, "licence", []) for _ in range(20)]
        for ticket in tickets:
            await eventually(partial(waiting, rapi, sre, ticket))
            queue.records[ticket].fields["ticket"] = "T-RENUMBERED"
        assert (await run(rapi, sre, "queue", site))["drifted"] == len(tickets)
    preview = (await rapi.post("/api/v1/reconciliation/drift/preview",
                               json={"filter": {"site": site}, "action": "ignore"}, headers=sre)).json()
    assert preview["acting"] == len(tickets)
    last = max(p["drift_id"] for p in preview["plans"])
    async with stack.pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("UPDATE drift_items SET status = 'ignored', action = 'ignore',"
                               " reason = 'by hand', acted_by = 'hand', resolved_at = now(),"
                               " updated_at = now() WHERE id = $1", last)
            bulk = asyncio.create_task(rapi.post(
                "/api/v1/reconciliation/drift/resolve", headers=sre, timeout=30,
                json={"selection": preview["selection"], "reason": "renumbered on purpose"}))
            await eventually(lambda: blocked_by(conn), timeout=30)
        answer = await bulk
    assert answer.status_code == 409 and "19 now, not 20" in answer.text, answer.text
    statuses = {i["id"]: i["status"] for i in await drift(rapi, sre, site=site)}
    assert len(statuses) == len(tickets)
    assert [i for i, status in statuses.items() if status == "ignored"] == [last], statuses


async def test_a_bulk_resolve_takes_the_oldest_500_and_the_next_preview_the_rest(rapi, pool, token, uid):
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    run_id = await pool.fetchval("INSERT INTO reconciliation_runs (system, site, day, trigger) VALUES"
                                 " ('queue', $1, current_date, 'on_demand') RETURNING id", site)
    await pool.execute("INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, kind) SELECT $1 || g,"
                       " $2, 'queue', $3, 'queue:D-' || g, 'missing_here' FROM generate_series(1, 503) g",
                       f"bulk-{uid}-", run_id, site)
    ignore = {"filter": {"site": site}, "action": "ignore"}
    preview = (await rapi.post("/api/v1/reconciliation/drift/preview", json=ignore, headers=sre)).json()
    assert (preview["matched"], preview["acting"], len(preview["plans"])) == (503, 500, 500)
    done = await rapi.post("/api/v1/reconciliation/drift/resolve",
                           json={"selection": preview["selection"], "reason": "drill"}, headers=sre)
    assert done.status_code == 200 and done.json()["acted"] == 500, done.text
    left = await pool.fetch("SELECT ref FROM drift_items WHERE run_id = $1 AND status = 'open' ORDER BY id",
                            run_id)
    assert [r["ref"] for r in left] == ["queue:D-501", "queue:D-502", "queue:D-503"]
    preview = (await rapi.post("/api/v1/reconciliation/drift/preview", json=ignore, headers=sre)).json()
    assert (preview["matched"], preview["acting"]) == (3, 3)


async def test_a_repair_whose_system_cannot_be_read_is_open_again_once_it_is_past_its_timeout(pool, uid):
    """Found in review: an item whose check-read failed stayed `repairing` for ever, and 200 of them kept
    every later one from being checked. No queue connector runs here, so the system cannot be read."""
    site = f"rec-{uid}"
    run_id = await pool.fetchval("INSERT INTO reconciliation_runs (system, site, day, trigger) VALUES"
                                 " ('queue', $1, current_date, 'on_demand') RETURNING id", site)
    # their corrective events (none) all applied; the first check of one failed two hours ago
    waiting = {"waiting_for": "events", "events": []}
    tried = {**waiting, "first_tried_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat()}
    old, recent = [await pool.fetchval(
        "INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, kind, status, action, last_check)"
        " VALUES ($1, $2, 'queue', $3, $4, 'missing_here', 'repairing', 'accept_source', $5::jsonb)"
        " RETURNING id", f"{name}-{uid}", run_id, site, f"queue:{name}-{uid}",
        msgspec.json.encode(check).decode())
        for name, check in (("OLD", tried), ("RECENT", waiting))]

    async def reopened() -> asyncpg.Record | None:
        return await pool.fetchrow("SELECT status, last_check FROM drift_items WHERE id = $1"
                                   " AND status = 'open'", old)

    row = await eventually(reopened, timeout=30)
    check = msgspec.json.decode(row["last_check"])
    assert check["found"] == "not verified" and "queue could not be read" in check["note"], check
    still = await pool.fetchrow("SELECT status, last_check FROM drift_items WHERE id = $1", recent)
    assert still["status"] == "repairing"  # its first failed check was just now
    kept = msgspec.json.decode(still["last_check"])
    assert kept["events"] == [] and "first_tried_at" in kept  # what it waits for is kept


async def test_accept_source_never_moves_a_stage_backwards_and_says_so(rapi, js, stack, token, uid, tmp_path):
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        ticket = await queue.arrive(site, "licence", [])
        await eventually(lambda: waiting(rapi, sre, ticket))  # the ticket's number is held before staff act
        for type_, data in (("ticket.called", {"counter": "C1"}), ("service.started", {"counter": "C1"}),
                            ("service.completed", {"outcome": "RESOLVED"})):
            await publish_as_backend(js, stack.settings, cloud_event(type_, ticket, {"site": site, **data},
                                                                source="/manual/floor1"))

        async def completed():
            journey = await journey_of(rapi, sre, ticket)
            return journey and journey["stage"] == "completed"

        await eventually(completed)
        found = await run(rapi, sre, "queue", site)
        items = await drift(rapi, sre, site=site, status="open")
        assert found["drifted"] == 1, [(i["kind"], i["field"], i["ours"], i["theirs"]) for i in items]
        [item] = items
        assert (item["field"], item["ours"], item["theirs"], item["proposed_action"]) == (
            "stage", "completed", "waiting", "push_ours")
        preview = (await rapi.post("/api/v1/reconciliation/drift/preview",
                                   json={"filter": {"site": site}, "action": "accept_source"},
                                   headers=sre)).json()
        assert preview["matched"] == 1 and preview["acting"] == 0
        assert not preview["plans"][0]["possible"] and "final stage" in preview["plans"][0]["note"]
        refused = await rapi.post(f"/api/v1/reconciliation/drift/{item['id']}/resolve",
                                  json={"action": "accept_source"}, headers=sre)
        assert refused.status_code == 409 and "not possible" in refused.text
        assert (await drift(rapi, sre, site=site, status="open"))[0]["status"] == "open"


async def test_roles_and_sites_are_enforced_on_every_route_and_a_refusal_changes_nothing(
        rapi, pool, stack, token, uid, tmp_path):
    site, other = f"rec-{uid}", f"rec-{uid}-other"
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        ticket = await queue.arrive(site, "licence", [])
        await eventually(lambda: waiting(rapi, sre, ticket))
        queue.records[ticket].fields["ticket"] = "T-OTHER"
        finished = await run(rapi, sre, "queue", site)
    [item] = await drift(rapi, sre, site=site)
    runs_before = await pool.fetchval("SELECT count(*) FROM reconciliation_runs WHERE site = $1", site)
    resolve = f"/api/v1/reconciliation/drift/{item['id']}/resolve"
    acts = [
        ("post", "/api/v1/reconciliation/runs", {"system": "queue", "site": site}),
        ("post", resolve, {"action": "ignore", "reason": "not mine to ignore"}),
        ("post", "/api/v1/reconciliation/drift/preview", {"filter": {"site": site}}),
        ("post", "/api/v1/reconciliation/drift/resolve", {"selection": "e30"}),
    ]
    for role in ("manager", "floor_staff", "connector"):
        for _, path, body in acts:
            headers = {"Authorization": f"Bearer {token(role, [site], system='queue')}"}
            response = await rapi.post(path, json=body, headers=headers)
            assert response.status_code == 403, (role, path, response.text)
    elsewhere = bearer(token, "sre", [other])
    for path, body in [(p, b) for _, p, b in acts[:3]]:
        response = await rapi.post(path, json=body, headers=elsewhere)
        assert response.status_code == 403, (path, response.text)
    for path in (f"/api/v1/reconciliation/drift/{item['id']}",
                 f"/api/v1/reconciliation/runs/{finished['id']}",
                 f"/api/v1/reconciliation/drift?site={site}", f"/api/v1/reconciliation?site={site}"):
        assert (await rapi.get(path, headers=elsewhere)).status_code == 403, path
        assert (await rapi.get(path, headers=bearer(token, "manager", [site]))).status_code == 200, path
    assert await drift(rapi, elsewhere) == [] and (await rapi.get(
        "/api/v1/reconciliation", headers=elsewhere)).json()["items"] == []
    assert (await drift(rapi, sre, site=site))[0]["status"] == "open"
    runs_after = await pool.fetchval("SELECT count(*) FROM reconciliation_runs WHERE site = $1", site)
    assert runs_after == runs_before
    malformed = await rapi.post("/api/v1/reconciliation/runs", json={"system": "queue"}, headers=sre)
    assert malformed.status_code == 400
    unknown = await rapi.post("/api/v1/reconciliation/runs", json={"system": "switchboard", "site": site},
                              headers=sre)
    assert unknown.status_code == 400


async def test_a_connector_can_never_publish_as_switchboard(rapi, js, pool, token, uid):
    site = f"rec-{uid}"
    forged = cloud_event("customer.arrived", f"queue:T-FORGED-{uid}", {"site": site}, source="/switchboard")
    await publish(js, forged)
    over_http = await rapi.post("/api/v1/events", json=forged, headers=bearer(token, "admin"))
    assert over_http.json()["rejected"][0]["kind"] == "unauthorized_source"

    async def refused():
        return await pool.fetchval("SELECT reason FROM failures"
                                   " WHERE event_source = '/switchboard' AND site = $1"
                                   " AND dedupe_key LIKE 'nats:%'", site)

    assert "only Switchboard itself" in await eventually(refused)
    assert await pool.fetchval("SELECT count(*) FROM journey_refs WHERE ref = $1", forged["subject"]) == 0


async def test_live_topic_shows_status_and_drift_as_runs_finish(rapi, token, stack, uid, tmp_path):
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    async with (running(stack.settings, tmp_path, queue),
                connect(stack.backend, token("manager", [site])) as ws):
        snapshot = await subscribe(ws, ["reconciliation"])
        assert snapshot["reconciliation"]["data"] == []
        ticket = await queue.arrive(site, "licence", [])
        await eventually(lambda: waiting(rapi, sre, ticket))
        queue.records[ticket].fields["ticket"] = "T-LIVE"
        finished = await run(rapi, sre, "queue", site)
        status, before = await receive_until(ws, lambda f: f["op"] == "update"
                                             and f["key"] == f"status:queue:{site}"
                                             and f["data"]["status"]["last_run"]["status"] == "done")
        assert status["site"] == site and status["data"]["status"]["last_run"]["id"] == finished["id"]
        # the drift, announced before the run's end
        [item] = [f for f in before if f["key"].startswith("drift:")]
        assert item["data"]["drift"]["theirs"] == "T-LIVE"


async def _fallback(pool: asyncpg.Pool, site: str, started_at: datetime) -> int:
    return await pool.fetchval("INSERT INTO fallbacks (site, system, reason, started_by, started_at)"
                               " VALUES ($1, 'queue', 'queue system down', 'floor1', $2) RETURNING id",
                               site, started_at)


async def _ledger(pool: asyncpg.Pool, fallback_id: int,
                  entries: list[tuple[str, str, dict[str, Any]]]) -> None:
    for seq, (action, ref, event) in enumerate(entries, start=1):
        await pool.execute(
            "INSERT INTO fallback_ledger (fallback_id, seq, action, ref, event_source, event_id, actor, data)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'floor1', $7::jsonb)",
            fallback_id, seq, action, ref, event["source"], event["id"],
            msgspec.json.encode(event["data"]).decode())


async def test_a_fallback_replay_pushes_each_hand_made_record_once_and_flags_what_the_system_changed(
        rapi, js, pool, stack, token, uid, tmp_path):
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        before = await queue.arrive(site, "tax", [])  # the system had it; staff called it by hand
        changed = await queue.arrive(site, "tax", [])  # staff called it; the system served it meanwhile
        agreed = await queue.arrive(site, "tax", [])  # staff only looked: the system holds what we hold
        for ref in (before, changed, agreed):
            await eventually(partial(waiting, rapi, sre, ref))
        fallback_id = await _fallback(pool, site, datetime.now(UTC))
        made = f"queue:M-001-{uid}"  # a manual ticket the system never saw
        manual = "/manual/floor1"
        steps = [
            ("check_in", made, cloud_event("customer.arrived", made, {"site": site}, source=manual)),
            ("issue_ticket", made, cloud_event("ticket.issued", made, {"site": site, "ticket": "M-001",
                                                                        "queue_name": "tax"}, source=manual)),
            ("call", before, cloud_event("ticket.called", before, {"site": site, "counter": "C4"},
                                         source=manual)),
            ("call", changed, cloud_event("ticket.called", changed, {"site": site, "counter": "C5"},
                                          source=manual)),
            ("check_in", agreed, cloud_event("customer.arrived", agreed, {"site": site}, source=manual)),
        ]
        for _, _, event in steps:
            await publish_as_backend(js, stack.settings, event)
        lost = f"queue:M-002-{uid}"  # a step whose event was refused: it must not hold the replay up
        refused = cloud_event("customer.arrived", lost, {"site": site}, source=manual)
        await publish(js, refused)  # unsigned: the apply worker refuses it
        unsent = f"queue:M-003-{uid}"  # a step whose event never reached the bus: the replay sends it
        steps += [("check_in", lost, refused),
                  ("check_in", unsent, cloud_event("customer.arrived", unsent, {"site": site},
                                                   source=manual))]
        await _ledger(pool, fallback_id, steps)
        await eventually(lambda: pool.fetchval("SELECT id FROM failures WHERE event_id = $1", refused["id"]))
        await eventually(lambda: journey_of(rapi, sre, made))
        queue.records[changed].stage = "completed"
        queue.records[changed].updated_at = datetime.now(UTC)

        async def called_by_hand():
            journeys = [await journey_of(rapi, sre, ref) for ref in (before, changed)]
            return all(j and j["stage"] == "called" for j in journeys)

        await eventually(called_by_hand)
        await pool.execute("UPDATE fallbacks SET status = 'replaying', ended_by = 'floor1', ended_at = now()"
                           " WHERE id = $1", fallback_id)

        async def ended():
            row = await pool.fetchrow("SELECT status, replay FROM fallbacks WHERE id = $1", fallback_id)
            return msgspec.json.decode(row["replay"]) if row["status"] == "ended" else None

        replay = await eventually(ended)
        assert (replay["pushed"], replay["in_system"], replay["conflicts"]) == (3, 1, [changed])
        ledger = {(r["ref"], r["replay_status"], r["command_id"]) for r in await pool.fetch(
            "SELECT DISTINCT ref, replay_status, command_id FROM fallback_ledger WHERE fallback_id = $1",
            fallback_id)}
        assert ledger == {(made, "pushed", replay_command_id(fallback_id, made)),
                          (before, "pushed", replay_command_id(fallback_id, before)),
                          (changed, "conflict", None), (agreed, "in_system", None), (lost, "refused", None),
                          (unsent, "pushed", replay_command_id(fallback_id, unsent))}
        assert await pool.fetchval("SELECT count(*) FROM reconciliation_runs WHERE site = $1"
                                   " AND trigger = 'fallback_end'", site) >= 1

        async def pushed():
            return (made in queue.records and unsent in queue.records
                    and queue.records[before].stage == "called")

        await eventually(pushed)
        assert queue.records[made].stage == "waiting" and queue.records[made].fields["ticket"] == "M-001"
        assert queue.records[before].fields["counter"] == "C4"
        assert queue.records[changed].stage == "completed", "the system's own change is never overwritten"
        conflict = one(await drift(rapi, sre, site=site, status="open"), ref=changed, field="stage")
        assert conflict["conflict"] and conflict["fallback_id"] == fallback_id
        assert (conflict["ours"], conflict["theirs"]) == ("called", "completed")

        # replaying again pushes nothing twice
        await pool.execute("UPDATE fallbacks SET status = 'replaying' WHERE id = $1", fallback_id)
        again = await eventually(ended)
        assert again["pushed"] == 3
        pushes = await pool.fetchval("SELECT count(*) FROM commands"
                                     " WHERE command = 'record.push' AND site = $1", site)
        assert pushes == 3


async def test_scheduled_runs_auto_repair_the_kinds_the_setting_names(server_urls, workdir, token, uid,
                                                                       tmp_path):
    site = f"rec-{uid}"
    sre = bearer(token, "sre", [site])
    appointments, queue = Appointments(), still_queue(site)
    scheduled = {"SWITCHBOARD_RECONCILE_INTERVAL_S": "2", "SWITCHBOARD_RECONCILE_TICK_S": "0.3",
                 "SWITCHBOARD_RECONCILE_AUTO_REPAIR": "missing_here,stale"}
    async with own_stack(server_urls["database_url"], workdir, scheduled) as stack:
        pool, process = stack.pool, stack.backend
        async with (httpx.AsyncClient(base_url=process.url, timeout=15) as api,
                    running(stack.settings, tmp_path, appointments, queue)):
            stuck = await queue.arrive(site, "passport", [])

            async def waiting():
                journey = await journey_of(api, sre, stuck)
                return journey and journey["stage"] == "waiting"

            await eventually(waiting)
            await pool.execute("UPDATE journeys SET updated_at = now() - interval '5 hours'"
                               " WHERE id = (SELECT journey_id FROM journey_refs WHERE ref = $1)", stuck)
            queue.records[stuck].stage = "completed"  # finished upstream; Switchboard never heard
            keyed_in = f"appointments:A-KEYED-{uid}"
            now = datetime.now(UTC)
            appointments.records[keyed_in] = Record(ref=keyed_in, site=site, created_at=now, updated_at=now,
                                                    stage="booked", fields={"service": "licence",
                                                                            "slot_start": now.isoformat()})

            async def repaired():
                # stuck it stays, whatever else reaches the journey meanwhile (an answer to a command the
                # rules sent for it)
                await pool.execute("UPDATE journeys SET updated_at = now() - interval '5 hours'"
                                   " WHERE stage = 'waiting'"
                                   " AND id = (SELECT journey_id FROM journey_refs WHERE ref = $1)", stuck)
                journeys = [await journey_of(api, sre, ref) for ref in (stuck, keyed_in)]
                first = journeys[0]
                return journeys if all(journeys) and first and first["stage"] == "completed" else None

            try:
                await eventually(repaired)
            except AssertionError as exc:
                runs_seen = [tuple(r) for r in await pool.fetch(
                    "SELECT system, trigger, status, checked, drifted, error FROM reconciliation_runs"
                    " WHERE site = $1", site)]
                drift_seen = [tuple(r) for r in await pool.fetch(
                    "SELECT system, kind, field, status, action, last_check FROM drift_items WHERE site = $1",
                    site)]
                beats = [tuple(r) for r in await pool.fetch(
                    "SELECT connector, system, upstream, seen_at FROM heartbeats")]
                raise AssertionError(f"runs {runs_seen}; drift {drift_seen}; heartbeats {beats}; log "
                                     f"{process.log_path.read_text()[-3000:]}") from exc
            items = await drift(api, sre, site=site)
            for kind in ("stale", "missing_here"):
                item = one(items, kind=kind)
                assert (item["action"], item["acted_by"]) == ("accept_source", "switchboard"), item

            unresolved: list[dict[str, object]] = []

            async def verified():
                unresolved[:] = [i for i in await drift(api, sre, site=site) if i["status"] != "resolved"]
                return not unresolved

            try:
                await eventually(verified)
            except AssertionError as exc:
                runs_seen = [tuple(r) for r in await pool.fetch(
                    "SELECT system, trigger, status, checked, drifted, error, started_at"
                    " FROM reconciliation_runs WHERE site = $1 ORDER BY started_at", site)]
                raise AssertionError(f"unresolved {unresolved}; runs {runs_seen}") from exc
            triggers = {r["trigger"] for r in await pool.fetch(
                "SELECT trigger FROM reconciliation_runs WHERE site = $1", site)}
            assert triggers == {"schedule"}


async def _replayed_until(pool: asyncpg.Pool, fallback_id: int, key: str) -> dict[str, Any]:
    """End the fallback, and wait until what its replay keeps names `key`."""
    await pool.execute("UPDATE fallbacks SET status = 'replaying', ended_by = 'floor1', ended_at = now()"
                       " WHERE id = $1", fallback_id)

    async def kept() -> dict[str, Any] | None:
        replay = await pool.fetchval("SELECT replay FROM fallbacks WHERE id = $1", fallback_id)
        return msgspec.json.decode(replay) if replay and key in replay else None

    return await eventually(kept, timeout=30)


async def test_a_replay_that_cannot_read_the_records_keeps_its_runs_and_waits(js, pool, stack, uid, tmp_path):
    """Found in review: its runs were kept only at its end, so a system whose day reads worked but whose
    lookups failed had a full run made for every day of the fallback again at every round."""
    site = f"rec-{uid}"
    queue = still_queue(site)
    lookups: list[str] = []
    read = queue.lookup

    async def lookup_fails_after_the_run(site: str, day: date, refs: Sequence[str]) -> Sequence[Any]:
        lookups.append(site)
        if len(lookups) == 1:  # the run's
            return await read(site, day, refs)
        raise ConnectionError("the queue system's lookups are down")

    queue.lookup = lookup_fails_after_the_run  # type: ignore[method-assign]
    async with running(stack.settings, tmp_path, queue):
        fallback_id = await _fallback(pool, site, datetime.now(UTC))
        made = f"queue:M-001-{uid}"
        step = cloud_event("customer.arrived", made, {"site": site}, source="/manual/floor1")
        await publish_as_backend(js, stack.settings, step)
        await _ledger(pool, fallback_id, [("check_in", made, step)])
        await eventually(lambda: pool.fetchval("SELECT count(*) FROM events WHERE id = $1", step["id"]))
        kept = await _replayed_until(pool, fallback_id, "unread_at")
    made_runs = await pool.fetch("SELECT id FROM reconciliation_runs WHERE site = $1 AND trigger ="
                                 " 'fallback_end'", site)
    assert kept["runs"] == [r["id"] for r in made_runs] and len(made_runs) == 1, (kept, made_runs)
    assert (kept["pushed"], kept["in_system"], kept["conflicts"]) == (0, 0, []) and len(lookups) >= 2
    assert await pool.fetchval("SELECT status FROM fallbacks WHERE id = $1", fallback_id) == "replaying"


async def test_a_replay_over_two_days_keeps_the_run_of_the_first_when_the_second_s_fails(js, pool, stack, uid,
                                                                                       tmp_path):
    site = f"rec-{uid}"
    queue = still_queue(site)
    today = datetime.now(UTC).date()
    read = queue.snapshot

    async def today_unreadable(site: str, day: date) -> Sequence[Any]:
        if day == today:
            raise ConnectionError("today's records are being rebuilt")
        return await read(site, day)

    queue.snapshot = today_unreadable  # type: ignore[method-assign]
    async with running(stack.settings, tmp_path, queue):
        fallback_id = await _fallback(pool, site, datetime.now(UTC) - timedelta(days=1))
        progress = await _replayed_until(pool, fallback_id, "run_days")
    runs = {r["day"]: (r["id"], r["status"]) for r in await pool.fetch(
        "SELECT id, day, status FROM reconciliation_runs WHERE site = $1 AND trigger = 'fallback_end'", site)}
    yesterday = today - timedelta(days=1)
    assert runs[yesterday][1] == "done" and runs[today][1] == "unreachable"
    assert progress["run_days"] == {yesterday.isoformat(): runs[yesterday][0]} and progress["runs"] == []


async def test_a_step_refused_then_applied_by_a_retry_of_its_failure_is_replayed(
        rapi, pool, stack, token, uid, tmp_path):
    """A walk-in checked in by hand while the database refused the site's journeys: the step is refused (an
    `apply_error`), then an SRE's retry of its failure applies it. The replay pushes it like any applied
    step; before, it stayed `refused` and the system never heard of the customer."""
    site = f"rec-{uid}"
    floor, sre = bearer(token, "floor_staff", [site]), bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        fallback = (await start(rapi, floor, site)).json()
        async with refusing_site(pool, site):
            refused = await act(rapi, floor, fallback["id"], action="check_in")
            assert refused.status_code == 400, refused.text
        retried = await rapi.post(f"/api/v1/failures/{refused.json()['failure_id']}/retry", json={},
                                  headers=sre)
        assert retried.json()["outcome"] == "resolved", retried.text
        [step] = (await rapi.get(f"/api/v1/fallbacks/{fallback['id']}", headers=floor)).json()["ledger"]
        ended = await ended_and_replayed(rapi, floor, fallback["id"], "queue is back")
        assert {e["ref"]: e["replay_status"] for e in ended["ledger"]} == {step["ref"]: "pushed"}

        async def in_the_queue() -> bool:
            return step["ref"] in queue.records

        assert await eventually(in_the_queue)


async def test_auto_repair_never_undoes_what_staff_did_by_hand_during_a_fallback(
        server_urls, workdir, token, uid, tmp_path):
    """Staff flagged a customer high priority by hand while the CRM was away. The fallback's end reads the CRM
    (normal), and auto-repair of `state_mismatch` took the CRM's word before the replay could push ours: the
    replay then found nothing to push and the flag was lost. The drift of a journey staff ran by hand is
    pushed, never taken."""
    site, customer = f"rec-{uid}", f"crm:C-{uid}"
    floor, sre = bearer(token, "floor_staff", [site]), bearer(token, "sre", [site])
    crm = Crm()
    now = datetime.now(UTC)
    crm.records[customer] = Record(ref=customer, site=site, created_at=now, updated_at=now,
                                   fields={"priority": "normal", "summaries": 0})
    auto = {**RECONCILING, "SWITCHBOARD_RECONCILE_AUTO_REPAIR": "state_mismatch"}
    async with (own_stack(server_urls["database_url"], workdir, auto) as stack,
                httpx.AsyncClient(base_url=stack.backend.url, timeout=15) as api,
                running(stack.settings, tmp_path, crm)):
        await publish(stack.js, cloud_event("customer.priority_changed", customer,
                                            {"site": site, "priority": "normal"}, source="/crm",
                                            time=now - timedelta(minutes=5)))
        await eventually(lambda: journey_of(api, sre, customer))
        fallback = (await start(api, floor, site, system="crm")).json()
        flagged = await acted(api, floor, fallback["id"], action="set_priority", ref=customer,
                              priority="high")
        assert flagged["status"] == "applied", flagged
        ended = await ended_and_replayed(api, floor, fallback["id"], "crm is back")
        assert {e["ref"]: e["replay_status"] for e in ended["ledger"]} == {customer: "pushed"}

        async def flag_kept() -> bool:
            return crm.records[customer].fields["priority"] == "high"

        await eventually(flag_kept)
        journey = await journey_of(api, sre, customer)
        assert journey is not None and journey["priority"] == "high"


async def test_a_fallback_through_the_api_is_replayed_when_the_system_returns_once_and_with_conflicts_flagged(
        rapi, pool, stack, token, uid, tmp_path):
    site = f"rec-{uid}"
    floor, sre = bearer(token, "floor_staff", [site]), bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        meanwhile = await queue.arrive(site, "tax", [])  # the queue has this one; staff call it by hand
        await eventually(lambda: waiting(rapi, sre, meanwhile))
        queue.faults.outage = True

        async def queue_is(status: str) -> bool:
            items = (await rapi.get("/api/v1/integrations", headers=sre)).json()["items"]
            return any(i["system"] == "queue" and i["status"] == status for i in items)

        await eventually(lambda: queue_is("down"))
        fallback = (await start(rapi, floor, site)).json()
        walk_in = await acted(rapi, floor, fallback["id"], action="check_in")
        ticket = await acted(rapi, floor, fallback["id"], action="issue_ticket", ref=walk_in["ref"])
        await acted(rapi, floor, fallback["id"], action="call", ref=meanwhile, counter="C2")
        queue.records[meanwhile].stage = "completed"  # the queue's own staff served it while it was away
        queue.records[meanwhile].updated_at = datetime.now(UTC)
        queue.faults.outage = False
        await eventually(lambda: queue_is("up"))
        ended = await ended_and_replayed(rapi, floor, fallback["id"], "queue is back")
        assert (ended["replay"]["pushed"], ended["replay"]["conflicts"]) == (1, [meanwhile])
        assert {e["ref"]: e["replay_status"] for e in ended["ledger"]} == {walk_in["ref"]: "pushed",
                                                                           meanwhile: "conflict"}

        async def in_the_queue():
            record = queue.records.get(walk_in["ref"])
            return record if record and record.fields.get("ticket") == ticket["ticket"] == "M-001" else None

        assert (await eventually(in_the_queue)).stage == "waiting"
        assert queue.records[meanwhile].stage == "completed", \
            "what the system changed meanwhile is never overwritten"
        conflict = one(await drift(rapi, sre, site=site, status="open"), ref=meanwhile, field="stage")
        assert conflict["conflict"] and conflict["fallback_id"] == fallback["id"]
        again = await rapi.post(f"/api/v1/fallbacks/{fallback['id']}/end", json={}, headers=floor)
        assert again.status_code == 409
        assert await pool.fetchval("SELECT count(*) FROM commands"
                                   " WHERE rule = 'fallback_replay' AND $1 = ANY(refs)", walk_in["ref"]) == 1
        await run(rapi, sre, "queue", site)
        assert [d["ref"] for d in await drift(rapi, sre, site=site, status="open")] == [meanwhile]


async def test_drift_about_a_journey_staff_ran_by_hand_names_their_fallback_by_any_of_its_references(
        pool, uid):
    """The fallback's ledger names the journey by one reference, the finding by another of the journey's
    (or by the same one); drift about anything else names no fallback."""
    site = f"rec-{uid}"
    journey_id, other_journey = uuid.uuid4(), uuid.uuid4()
    for jid in (journey_id, other_journey):
        await pool.execute("INSERT INTO journeys (id, site, stage, state) VALUES ($1, $2, 'waiting', '{}')",
                           jid, site)
    await pool.execute("INSERT INTO journey_refs (ref, journey_id) VALUES ($1, $3), ($2, $3), ($4, $5)",
                       f"queue:T-{uid}", f"manual:{site}.M-001", journey_id, f"queue:U-{uid}", other_journey)
    fallback_id = await _fallback(pool, site, datetime.now(UTC))
    await pool.execute("INSERT INTO fallback_ledger (fallback_id, seq, action, ref, event_source, event_id,"
                       " actor, data) VALUES ($1, 1, 'call', $2, '/manual/floor1', $3, 'floor1', '{}'),"
                       " ($1, 2, 'check_in', $4, '/manual/floor1', $5, 'floor1', '{}')", fallback_id,
                       f"manual:{site}.M-001", f"e1-{uid}", f"queue:W-{uid}", f"e2-{uid}")
    run_id = await pool.fetchval("INSERT INTO reconciliation_runs (system, site, day, trigger) VALUES"
                                 " ('queue', $1, current_date, 'on_demand') RETURNING id", site)
    findings = [Finding(kind="state_mismatch", ref=f"queue:T-{uid}", field="stage", ours="called",
                        theirs="waiting", journey_id=journey_id),
                Finding(kind="missing_there", ref=f"queue:W-{uid}"),
                Finding(kind="state_mismatch", ref=f"queue:U-{uid}", field="stage", ours="called",
                        theirs="waiting", journey_id=other_journey)]
    async with pool.acquire() as conn, conn.transaction():
        await store_findings(conn, run_id, "queue", site, findings, [f.ref for f in findings])
    named = {r["ref"]: r["fallback_id"] for r in await pool.fetch(
        "SELECT ref, fallback_id FROM drift_items WHERE run_id = $1", run_id)}
    assert named == {f"queue:T-{uid}": fallback_id, f"queue:W-{uid}": fallback_id, f"queue:U-{uid}": None}
