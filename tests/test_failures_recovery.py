"""Failures (CONTRACT section 4): every inbound kind, truthful retry, bulk retry, discard, impact order,
audit.

The command kinds (`command_failed`, `command_timeout`) are covered end to end in test_commands.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import cast

import asyncpg
import msgspec
import pytest

from backend.failures.services import record_inbound
from backend.ingest.validate import Rejected
from backend.live.bus import Announcements
from tests.support.backends import nats_connect
from tests.support.database import blocked_by, refusing_site
from tests.support.events import cloud_event, publish, publish_as_backend
from tests.support.failures import bearer, failures_of, one_failure
from tests.support.waits import Check, eventually


async def wrong_subject(js, event: dict, system: str = "crm") -> None:
    """Publish on another system's subject: a `source_mismatch`."""
    await publish(js, event, subject=f"svc.events.{system}.{event['type']}")


async def test_every_inbound_failure_kind_is_recorded_with_a_redacted_payload(api, js, pool, token, uid):
    site = f"site-{uid}"
    admin = bearer(token, "admin")
    await publish(js, b'{"specversion": "1.0", "id": "broken-' + uid.encode() + b'", "source": "/queue"',
                  subject="svc.events.queue.customer.arrived")
    await publish(js, cloud_event("customer.arrived", f"queue:P-{uid}",
                                  {"site": site, "email": f"{uid}@mail.example"}))
    await wrong_subject(js, cloud_event("customer.arrived", f"queue:M-{uid}", {"site": site}))
    await publish(js, cloud_event("customer.arrived", f"fax:F-{uid}", {"site": site}))
    await _poison_events(pool, uid)
    try:
        await publish(js, cloud_event("customer.arrived", f"queue:X-{uid}", {"site": site},
                                      id=f"poison-{uid}"))
        kinds = {}
        for kind in ("pii_rejected", "source_mismatch", "unauthorized_source", "apply_error"):
            kinds[kind] = await one_failure(api, admin, site=site, kind=kind)
    finally:
        await _cure_events(pool, uid)

    async def malformed():
        items = await failures_of(api, admin, kind="invalid_event")
        return [f for f in items if f"broken-{uid}" in f["payload"].get("excerpt", "")]

    [invalid] = await eventually(malformed)
    assert invalid["reason"].startswith("malformed JSON")
    assert kinds["pii_rejected"]["payload"]["data"]["email"] == "[redacted]"
    assert f"{uid}@mail.example" not in json.dumps(kinds["pii_rejected"]["payload"])
    assert "svc.events.crm" in kinds["source_mismatch"]["reason"]
    assert "'fax' is not registered" in kinds["unauthorized_source"]["reason"]
    assert "storage refused" in kinds["apply_error"]["reason"]
    assert all(f["status"] == "open" and f["attempts"] == 1 for f in kinds.values())


async def _poison_events(pool: asyncpg.Pool, uid: str) -> None:
    """A real database refusal for this test's `poison-` events: the cause of an `apply_error`."""
    await pool.execute(f"""
        CREATE FUNCTION poison_{uid}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id LIKE 'poison-{uid}%' THEN RAISE EXCEPTION 'storage refused %', NEW.id; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER poison_{uid} BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison_{uid}();
    """)


async def _cure_events(pool: asyncpg.Pool, uid: str) -> None:
    await pool.execute(f"DROP TRIGGER IF EXISTS poison_{uid} ON events;"
                       f" DROP FUNCTION IF EXISTS poison_{uid}();")


async def test_a_retry_reports_the_truth_and_resolves_once_the_cause_is_fixed(api, js, pool, token, uid):
    site = f"site-{uid}"
    sre = bearer(token, "sre", [site])
    # ten digits in a row, as random hex holds one time in a hundred: the stored payload keeps them, so the
    # retry applies the event that was sent
    ref = f"queue:X-{int(uid, 16) % 10**10:010d}"
    await _poison_events(pool, uid)
    try:
        await publish(js, cloud_event("customer.arrived", ref, {"site": site}, id=f"poison-{uid}"))
        failure = await one_failure(api, sre, site=site, kind="apply_error")
        still = await api.post(f"/api/v1/failures/{failure['id']}/retry", headers=sre,
                               json={"reason": "try again"})
        assert still.status_code == 200
        assert (still.json()["outcome"], still.json()["status"], still.json()["attempts"]) == \
            ("still_failing", "open", 2)
    finally:
        await _cure_events(pool, uid)
    await asyncio.sleep(1.1)  # past the double-click window
    retry_path = f"/api/v1/failures/{failure['id']}/retry"
    first, second = await asyncio.gather(*(api.post(retry_path, headers=sre, json={}) for _ in range(2)))
    outcomes = sorted([first.json()["outcome"], second.json()["outcome"]])
    assert outcomes in (["already_resolved", "resolved"], ["just_retried", "resolved"])
    resolved = await api.get(f"/api/v1/failures/{failure['id']}", headers=sre)
    assert (resolved.json()["status"], resolved.json()["attempts"], resolved.json()["acted_by"]) == \
        ("resolved", 3, "test-sre")
    [journey] = (await api.get("/api/v1/journeys", params={"ref": ref}, headers=sre)).json()["items"]
    timeline = (await api.get(f"/api/v1/journeys/{journey['id']}", headers=sre)).json()["timeline"]
    assert [e["id"] for e in timeline] == [f"poison-{uid}"]  # applied once

    audit = (await api.get("/api/v1/audit", params={"actor": "test-sre"}, headers=sre)).json()["items"]
    mine = [a for a in audit if a["target"] == f"failure:{failure['id']}"]
    assert [a["result"]["outcome"] for a in reversed(mine)][:1] == ["still_failing"]
    assert sorted(a["result"]["outcome"] for a in mine) == sorted(["still_failing", *outcomes])
    assert all(a["action"] == "failure.retry" and a["roles"] == ["sre"] for a in mine)
    assert mine[-1]["reason"] == "try again"


async def test_a_message_that_is_not_utf_8_is_a_failure_and_the_stream_flows_on(api, js, pool, token, uid):
    """Found in review: the decoder's UnicodeDecodeError once stopped the worker's fetching for good."""
    site = f"site-{uid}"
    broken = msgspec.json.encode(cloud_event("customer.arrived", f"queue:U-{uid}", {"site": site}))
    await publish(js, broken.replace(b'"site"', b'"note":"\xff","site"'),
                  subject="svc.events.queue.customer.arrived")
    after = cloud_event("customer.arrived", f"queue:A-{uid}", {"site": site})
    await publish(js, after)
    admin = bearer(token, "admin")

    async def refused():
        items = await failures_of(api, admin, kind="invalid_event")
        return [f for f in items if f"U-{uid}" in f["payload"].get("excerpt", "")]

    [failure] = await eventually(refused)
    assert failure["reason"].startswith("not valid UTF-8")
    assert await eventually(lambda: pool.fetchval("SELECT count(*) FROM events WHERE id = $1", after["id"]))
    # over HTTP the same body is refused by itself (it answered 500 before), and recorded
    connector = {"Authorization": f"Bearer {token('connector', [site], system='queue')}",
                 "Content-Type": "application/json"}
    answer = await api.post("/api/v1/events", headers=connector,
                            content=broken.replace(b"U-", b"W-").replace(b'"site"', b'"note":"\xff","site"'))
    assert answer.status_code == 202, answer.text
    assert [(r["kind"], r["reason"][:15]) for r in answer.json()["rejected"]] == [("invalid_event",
                                                                                     "not valid UTF-8")]


async def test_a_publisher_s_header_named_status_does_not_hide_its_event(js, pool, uid):
    """Found in review: the pull feed took any message with a `Status` header for the server's own answer."""
    event = cloud_event("customer.arrived", f"queue:H-{uid}", {"site": f"site-{uid}"})
    await js.publish("svc.events.queue.customer.arrived", msgspec.json.encode(event),
                     headers={"Nats-Msg-Id": f"/queue {event['id']}", "Status": "408"})
    assert await eventually(lambda: pool.fetchval("SELECT count(*) FROM events WHERE id = $1", event["id"]))


async def test_a_payload_that_cannot_become_valid_stays_open_and_says_why(api, js, token, uid):
    site = f"site-{uid}"
    sre = bearer(token, "sre", [site])
    await publish(js, cloud_event("customer.arrived", f"queue:P-{uid}",
                                  {"site": site, "phone": "+44 20 7946 0000"}))
    await publish(js, cloud_event("customer.arrived", f"fax:F-{uid}", {"site": site}))
    pii = await one_failure(api, sre, site=site, kind="pii_rejected")
    fax = await one_failure(api, sre, site=site, kind="unauthorized_source")
    retried = (await api.post(f"/api/v1/failures/{pii['id']}/retry", headers=sre, json={})).json()
    assert (retried["outcome"], retried["status"], retried["attempts"]) == ("still_failing", "open", 2)
    assert "stored redacted, so this payload can never become valid" in retried["note"]
    refused = await api.post(f"/api/v1/failures/{fax['id']}/retry", headers=sre, json={})
    assert refused.status_code == 409 and "never retried" in refused.text
    assert (await api.get(f"/api/v1/failures/{fax['id']}", headers=sre)).json()["attempts"] == 1
    pii_retry = (await api.get(f"/api/v1/failures/{pii['id']}", headers=sre)).json()
    assert pii_retry["kind"] == "pii_rejected"
    last = (await api.get("/api/v1/audit", params={"actor": "test-sre"}, headers=sre)).json()["items"]
    pii_audit = next(a for a in last if a["target"] == f"failure:{pii['id']}")
    assert "stored redacted" in pii_audit["result"]["note"]


async def test_the_same_refused_event_posted_again_is_the_same_failure(api, token, uid):
    """Over HTTP as over NATS (where a redelivery is keyed by its stream sequence): a connector resending an
    event that is refused does not open a failure more each time (they fill the failures piling up alert)."""
    site = f"site-{uid}"
    connector = {"Authorization": f"Bearer {token('connector', system='queue')}"}
    bad = cloud_event("ticket.called", f"queue:T-{uid}", {"site": site, "counter": 7})
    for _ in range(3):
        answer = await api.post("/api/v1/events", json=bad, headers=connector)
        assert answer.json()["rejected"][0]["kind"] == "invalid_event", answer.text
    another = cloud_event("ticket.called", f"queue:U-{uid}", {"site": site, "counter": 7})
    await api.post("/api/v1/events", json=another, headers=connector)
    failures = await failures_of(api, bearer(token, "sre", [site]), site=site)
    assert sorted(f["event_id"] for f in failures) == sorted([bad["id"], another["id"]])


async def test_a_step_of_switchboard_s_own_that_failed_to_apply_is_applied_by_a_retry(api, js, pool, settings,
                                                                                      token, uid):
    """A manual step (signed by the backend) that the database refused becomes an `apply_error`; its retry
    applies it. Before, the retry judged the stored payload as unsigned: `unauthorized_source`, never to be
    retried again, and the step was lost."""
    site, ticket = f"site-{uid}", f"queue:T-{uid}"
    sre = bearer(token, "sre", [site])
    step = cloud_event("customer.arrived", ticket, {"site": site}, source="/manual/floor1")
    async with refusing_site(pool, site):
        await publish_as_backend(js, settings, step)
        failure = await one_failure(api, sre, site=site, kind="apply_error")
    retried = (await api.post(f"/api/v1/failures/{failure['id']}/retry", headers=sre, json={})).json()
    assert (retried["outcome"], retried["status"]) == ("resolved", "resolved"), retried
    assert await pool.fetchval("SELECT count(*) FROM events WHERE id = $1", step["id"]) == 1


async def test_bulk_retry_retries_exactly_the_previewed_set(api, js, pool, token, uid):
    site, other = f"site-{uid}", f"other-{uid}"
    sre = bearer(token, "sre", [site, other])

    async def poisoned(name: str, at: str) -> None:
        await publish(js, cloud_event("customer.arrived", f"queue:{name}-{uid}", {"site": at},
                                      id=f"poison-{uid}-{name}"))

    await _poison_events(pool, uid)
    try:
        for n in range(3):
            await poisoned(f"M{n}", site)
        await poisoned("O", other)
        await publish(js, cloud_event("customer.arrived", f"fax:F-{uid}", {"site": site}))
        await eventually(lambda: _count(api, sre, 3, site=site, kind="apply_error"))
        await one_failure(api, sre, site=other)
        await one_failure(api, sre, site=site, kind="unauthorized_source")

        wanted = {"filter": {"site": site, "kind": "apply_error"}}
        preview = (await api.post("/api/v1/failures/retry", headers=sre, json=wanted)).json()
        assert (preview["matched"], preview["dry_run"], preview["results"]) == (3, True, [])

        # after the preview: one more matching failure (not in the previewed set) and one of the set discarded
        await poisoned("M3", site)
        [newest, *previewed] = await eventually(lambda: _count(api, sre, 4, site=site, kind="apply_error"))
        discarded = previewed[0]
        await api.post(f"/api/v1/failures/{discarded['id']}/discard", headers=sre,
                       json={"reason": "duplicate"})
        stale = await api.post("/api/v1/failures/retry", headers=sre,
                               json={"dry_run": False, "selection": preview["selection"]})
        assert stale.status_code == 409
        assert "2 match now, not 3" in stale.json()["title"]
        assert all(f["attempts"] == 1 and f["status"] in ("open", "discarded")
                   for f in await failures_of(api, sre, site=site, kind="apply_error"))

        preview = (await api.post("/api/v1/failures/retry", headers=sre, json=wanted)).json()
        assert preview["matched"] == 3
        await poisoned("M4", site)
        [latecomer, *_] = await eventually(lambda: _count(api, sre, 5, site=site, kind="apply_error"))
    finally:
        await _cure_events(pool, uid)
    done = await api.post("/api/v1/failures/retry", headers=sre,
                          json={"dry_run": False, "selection": preview["selection"],
                                "reason": "connector fixed"})
    assert done.status_code == 200
    results = done.json()["results"]
    retried = {newest["id"], *(f["id"] for f in previewed[1:])}
    assert sorted(r["failure_id"] for r in results) == sorted(retried)
    assert {r["outcome"] for r in results} == {"resolved"}
    after = {f["id"]: f["status"] for f in await failures_of(api, sre, site=site, kind="apply_error")}
    assert after == {**dict.fromkeys(retried, "resolved"), discarded["id"]: "discarded",
                     latecomer["id"]: "open"}
    assert [f["status"] for f in await failures_of(api, sre, site=other)] == ["open"]
    unauthorized = await failures_of(api, sre, site=site, kind="unauthorized_source")
    assert [f["status"] for f in unauthorized] == ["open"]

    again = await api.post("/api/v1/failures/retry", headers=sre,
                           json={"dry_run": False, "selection": preview["selection"]})
    assert again.status_code == 409  # the set is resolved now: a second click retries nothing
    audit = (await api.get("/api/v1/audit", params={"actor": "test-sre"}, headers=sre)).json()["items"]
    bulk_rows = [a for a in audit if a["result"].get("selection") == preview["selection"]]
    assert sorted(int(a["target"].split(":")[1]) for a in bulk_rows) == sorted(retried)
    assert {a["reason"] for a in bulk_rows} == {"connector fixed"}


async def test_a_failure_discarded_while_a_bulk_retry_runs_is_answered_in_its_place(api, js, pool, token,
                                                                                    uid):
    """Before, the bulk stopped at it with a 409, the failures before it retried and those after it not. The
    discard holds the last failure's row until the bulk, past the others, waits for it."""
    site = f"site-{uid}"
    sre = bearer(token, "sre", [site])
    await _poison_events(pool, uid)
    try:
        for n in range(20):
            await publish(js, cloud_event("customer.arrived", f"queue:B{n}-{uid}", {"site": site},
                                          id=f"poison-{uid}-B{n}"))
        await eventually(lambda: _count(api, sre, 20, site=site, kind="apply_error"))
        preview = (await api.post("/api/v1/failures/retry", headers=sre,
                                  json={"filter": {"site": site, "kind": "apply_error"}})).json()
    finally:
        await _cure_events(pool, uid)
    last = max(f["id"] for f in await failures_of(api, sre, site=site))
    async with pool.acquire() as conn:
        async with conn.transaction():
            # the discard's own statement, committed only once the bulk (retrying in id order, so past the
            # others) waits for the row
            await conn.execute("UPDATE failures SET status = 'discarded', last_at = now(), acted_by = 'hand'"
                               " WHERE id = $1", last)
            bulk = asyncio.create_task(api.post("/api/v1/failures/retry", headers=sre, timeout=30,
                                                json={"dry_run": False, "selection": preview["selection"]}))
            await eventually(lambda: blocked_by(conn), timeout=30)
        answer = await bulk
    assert answer.status_code == 200, answer.text
    outcomes = {r["failure_id"]: r["outcome"] for r in answer.json()["results"]}
    after = {f["id"]: f["status"] for f in await failures_of(api, sre, site=site)}
    assert sorted(outcomes) == sorted(after)
    assert outcomes.pop(last) == "already_discarded" and after.pop(last) == "discarded"
    assert set(outcomes.values()) == {"resolved"} and set(after.values()) == {"resolved"}


async def _count(api, headers, n, **params):
    items = await failures_of(api, headers, **params)
    return items if len(items) == n else None


async def test_an_event_that_fails_again_after_its_failure_was_discarded_opens_it_again(api, js, pool, token,
                                                                                         uid):
    """Found in review: the second failure met the discarded one's key and was dropped, acknowledged."""
    site = f"site-{uid}"
    sre = bearer(token, "sre", [site])
    event = cloud_event("customer.arrived", f"queue:X-{uid}", {"site": site}, id=f"poison-{uid}")
    await _poison_events(pool, uid)
    try:
        await publish(js, event)
        failure = await one_failure(api, sre, site=site, kind="apply_error")
        discarded = await api.post(f"/api/v1/failures/{failure['id']}/discard", headers=sre,
                                   json={"reason": "a test event"})
        assert discarded.status_code == 200, discarded.text
        # sent again as a new message (no Nats-Msg-Id: JetStream's duplicate window would drop it)
        await publish(js, msgspec.json.encode(event), subject="svc.events.queue.customer.arrived")

        async def reopened():
            again = (await api.get(f"/api/v1/failures/{failure['id']}", headers=sre)).json()
            return again if again["status"] == "open" else None

        again = await eventually(reopened)
    finally:
        await _cure_events(pool, uid)
    assert again["attempts"] == 2 and "storage refused" in again["reason"]


async def test_discard_needs_a_reason_and_is_audited(api, js, token, uid):
    site = f"site-{uid}"
    sre = bearer(token, "sre", [site])
    await publish(js, cloud_event("customer.arrived", f"fax:F-{uid}", {"site": site}))
    failure = await one_failure(api, sre, site=site)
    path = f"/api/v1/failures/{failure['id']}/discard"
    assert (await api.post(path, headers=sre, json={})).status_code == 400
    assert (await api.post(path, headers=sre, json={"reason": ""})).status_code == 400
    discarded = await api.post(path, headers=sre, json={"reason": "test system, retired"})
    assert (discarded.status_code, discarded.json()["outcome"], discarded.json()["status"]) == \
        (200, "discarded", "discarded")
    again = await api.post(path, headers=sre, json={"reason": "again"})
    assert again.json()["outcome"] == "already_discarded"
    retry = await api.post(f"/api/v1/failures/{failure['id']}/retry", headers=sre, json={})
    assert retry.status_code == 409
    audit = (await api.get("/api/v1/audit", params={"actor": "test-sre"}, headers=sre)).json()["items"]
    rows = [a for a in audit if a["target"] == f"failure:{failure['id']}"]
    assert [(a["action"], a["reason"], a["result"]["outcome"]) for a in reversed(rows)] == [
        ("failure.discard", "test system, retired", "discarded"),
        ("failure.discard", "again", "already_discarded")]


@pytest.mark.parametrize(("role", "sites", "status"), [
    ("manager", "*", 403), ("floor_staff", "*", 403), ("sre", ["elsewhere"], 403),
    ("admin", ["elsewhere"], 403),
])
async def test_only_sres_and_admins_of_the_site_may_act_on_failures(api, js, token, uid, role, sites, status):
    site = f"site-{uid}"
    await publish(js, cloud_event("customer.arrived", f"fax:F-{uid}", {"site": site}))
    failure = await one_failure(api, bearer(token, "admin"), site=site)
    who = bearer(token, role, sites)
    retry = await api.post(f"/api/v1/failures/{failure['id']}/retry", headers=who, json={})
    discard = await api.post(f"/api/v1/failures/{failure['id']}/discard", headers=who,
                             json={"reason": "nope"})
    bulk = await api.post("/api/v1/failures/retry", headers=who, json={"filter": {"site": site}})
    assert [retry.status_code, discard.status_code, bulk.status_code] == [status] * 3
    unchanged = await api.get(f"/api/v1/failures/{failure['id']}", headers=bearer(token, "admin"))
    assert (unchanged.json()["status"], unchanged.json()["attempts"]) == ("open", 1)


async def test_acting_on_failures_needs_a_token_and_connectors_may_not(api, token):
    connector = {"Authorization": f"Bearer {token('connector', '*', 'queue')}"}
    for headers, status in (({}, 401), (connector, 403)):
        assert (await api.post("/api/v1/failures/1/retry", headers=headers, json={})).status_code == status
        assert (await api.post("/api/v1/failures/retry", headers=headers, json={})).status_code == status
        discard = await api.post("/api/v1/failures/1/discard", headers=headers, json={"reason": "x" * 5})
        assert discard.status_code == status


async def test_the_audit_log_is_for_sres_and_admins_and_cannot_be_changed(api, pool, token):
    for role, status in (("manager", 403), ("floor_staff", 403), ("sre", 200), ("admin", 200)):
        assert (await api.get("/api/v1/audit", headers=bearer(token, role))).status_code == status
    since = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    future = await api.get("/api/v1/audit", params={"since": since}, headers=bearer(token, "sre"))
    assert future.json()["items"] == []
    await pool.execute("INSERT INTO audit_log (actor, roles, action, target, result)"
                       " VALUES ('probe', '{sre}', 'probe', 'none', '{}')")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("UPDATE audit_log SET reason = 'rewritten' WHERE actor = 'probe'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("DELETE FROM audit_log WHERE actor = 'probe'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pool.execute("TRUNCATE audit_log")
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE actor = 'probe' AND reason IS NULL") == 1


async def test_failures_can_be_ordered_by_customer_impact(api, js, token, uid):
    site = f"site-{uid}"
    reader = bearer(token, "manager", [site])
    now = datetime.now(UTC)

    def booking(ref: str, slot_in: timedelta) -> dict:
        return cloud_event("appointment.booked", ref, {"site": site, "service": "passport", "channel": "web",
                                                       "slot_start": (now + slot_in).isoformat()})

    await publish(js, booking(f"appointments:LATER-{uid}", timedelta(hours=3)))
    await publish(js, booking(f"appointments:SOON-{uid}", timedelta(minutes=20)))
    await publish(js, cloud_event("ticket.issued", f"queue:WAIT-{uid}",
                                  {"site": site, "ticket": "T1", "queue_name": "main"}))
    for ref in (f"appointments:LATER-{uid}", f"appointments:SOON-{uid}", f"queue:WAIT-{uid}"):
        await eventually(cast(Check, lambda ref=ref: _journey(api, reader, ref)))
    # created in the opposite order of their impact
    for ref in (f"queue:NONE-{uid}", f"appointments:LATER-{uid}", f"appointments:SOON-{uid}",
                f"queue:WAIT-{uid}"):
        await wrong_subject(js, cloud_event("interaction.logged", ref, {"site": site, "channel": "phone",
                                                                       "reason_code": "Q", "outcome": "OK"}))
        await eventually(cast(Check, lambda ref=ref: _failure_with_subject(api, reader, site, ref)))

    by_impact = await failures_of(api, reader, site=site, order="impact")
    assert [f["event_id"] for f in by_impact] == [f["event_id"] for f in reversed(by_impact)][::-1]
    stages = [(f["impact"] or {}).get("stage") for f in by_impact]
    assert stages == ["waiting", "booked", "booked", None]
    assert by_impact[1]["impact"]["slot_start"] < by_impact[2]["impact"]["slot_start"]
    by_time = await failures_of(api, reader, site=site)
    assert [f["id"] for f in by_time] == sorted((f["id"] for f in by_time), reverse=True)
    assert [f["id"] for f in by_time] == [by_impact[i]["id"] for i in (0, 1, 2, 3)]
    page = (await api.get("/api/v1/failures", params={"site": site, "order": "impact", "limit": 3},
                          headers=reader)).json()
    rest = (await api.get("/api/v1/failures",
                          params={"site": site, "order": "impact", "cursor": page["next_cursor"]},
                          headers=reader)).json()
    assert [f["id"] for f in page["items"] + rest["items"]] == [f["id"] for f in by_impact]

    # a failure at another site about a reference of this site's waiting customer: that journey is not
    # the other site's readers' to see
    other = f"other-{uid}"
    await wrong_subject(js, cloud_event("interaction.logged", f"queue:WAIT-{uid}",
                                        {"site": other, "channel": "phone", "reason_code": "Q",
                                         "outcome": "OK"}))
    outsider = bearer(token, "manager", [other])
    [elsewhere] = await eventually(lambda: _failure_with_subject(api, outsider, other, f"queue:WAIT-{uid}"))
    assert elsewhere["impact"] is None
    assert (await api.get(f"/api/v1/failures/{elsewhere['id']}", headers=outsider)).json()["impact"] is None


async def _journey(api, headers, ref):
    return (await api.get("/api/v1/journeys", params={"ref": ref}, headers=headers)).json()["items"]


async def _failure_with_subject(api, headers, site, ref):
    items = await failures_of(api, headers, site=site)
    return [f for f in items if f["payload"].get("subject") == ref]


async def test_every_failure_change_is_announced_once_committed(api, js, pool, settings, token, uid):
    """On the live bus, once per committed change: a refused retry, which changes nothing, says nothing."""
    site = f"site-{uid}"
    sre = bearer(token, "sre", [site])
    heard: dict[str, list[tuple[str, int]]] = defaultdict(list)

    async def on_failure(msg) -> None:
        site_of, key, data = msgspec.json.decode(msg.data)  # a `BusUpdate`
        if site_of == site:
            heard[key].append((data["status"], data["attempts"]))

    nc = await nats_connect(settings)
    await nc.subscribe("svc.live.failures", cb=on_failure)
    try:
        await _poison_events(pool, uid)
        try:
            await publish(js, cloud_event("customer.arrived", f"queue:M-{uid}", {"site": site},
                                          id=f"poison-{uid}"))
            poisoned = await one_failure(api, sre, site=site, kind="apply_error")
        finally:
            await _cure_events(pool, uid)
        await publish(js, cloud_event("customer.arrived", f"fax:F-{uid}", {"site": site}))
        fax = await one_failure(api, sre, site=site, kind="unauthorized_source")
        await publish(js, cloud_event("customer.arrived", f"queue:F-{uid}", {"site": site},
                                      time=datetime(2999, 1, 1, tzinfo=UTC)))
        future = await one_failure(api, sre, site=site, kind="invalid_event")
        await api.post(f"/api/v1/failures/{poisoned['id']}/retry", headers=sre, json={})
        fax_retry = await api.post(f"/api/v1/failures/{fax['id']}/retry", headers=sre, json={})
        assert fax_retry.status_code == 409
        await api.post(f"/api/v1/failures/{future['id']}/retry", headers=sre, json={})
        await api.post(f"/api/v1/failures/{fax['id']}/discard", headers=sre,
                       json={"reason": "retired system"})

        await eventually(lambda: asyncio.sleep(0, len(heard[str(fax["id"])]) == 2))
        await nc.flush()
        assert heard[str(poisoned["id"])] == [("open", 1), ("resolved", 2)]
        assert heard[str(future["id"])] == [("open", 1), ("open", 2)]
        assert heard[str(fax["id"])] == [("open", 1), ("discarded", 1)]  # a refused retry changes nothing
    finally:
        await nc.close()


async def test_the_same_failure_twice_in_one_batch_is_recorded_once(pool, uid):
    """A message redelivered into the batch it is already in, or an event resent past JetStream's duplicate
    window into the same batch: one failure, not a statement Postgres refuses (which once stopped the apply
    worker, batch after batch)."""
    site = f"site-{uid}"
    first = Rejected(kind="apply_error", reason="the first copy", payload={"id": uid}, system="queue",
                     site=site, event_source="/queue", event_id=uid, event_type="customer.arrived")
    again = msgspec.structs.replace(first, reason="the second copy")
    announce = Announcements()
    async with pool.acquire() as conn, conn.transaction():
        await record_inbound(conn, announce, [(first, f"apply:/queue {uid}"), (again, f"apply:/queue {uid}")])
    rows = await pool.fetch("SELECT id, reason, attempts FROM failures WHERE site = $1", site)
    assert [(r["reason"], r["attempts"]) for r in rows] == [("the first copy", 1)]
    assert [m.topic for m in announce.messages] == ["failures"]
