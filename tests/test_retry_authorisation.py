"""A retry never overrules the transport (CONTRACT section 9): an event refused for who sent it
(`source_mismatch`, `unauthorized_source`) stays a failure after a retry and a bulk retry, no journey
is made of it, and it can only be discarded. Real Postgres and NATS, state compared before and after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tests.support.database import refusing_site
from tests.support.events import cloud_event, publish
from tests.support.failures import bearer, failures_of, one_failure
from tests.support.waits import eventually


async def _state(pool: asyncpg.Pool, uid: str, failure_ids: list[int]) -> dict:
    return {
        "journeys": await pool.fetchval("SELECT count(*) FROM journey_refs WHERE ref LIKE $1", f"%-{uid}"),
        "events": await pool.fetchval("SELECT count(*) FROM events WHERE id LIKE $1", f"%{uid}%"),
        "failures": [tuple(r) for r in await pool.fetch(
            "SELECT id, kind, status, attempts FROM failures WHERE id = ANY($1::bigint[]) ORDER BY id",
            failure_ids)],
    }


async def test_a_laundering_retry_is_refused_and_changes_nothing(api, js, pool, token, uid):
    site = f"site-{uid}"
    sre = bearer(token, "sre", [site])
    # an event from /crm published on the queue's subject, and a connector of the queue posting as /crm
    await publish(js, cloud_event("customer.arrived", f"crm:C-{uid}", {"site": site}, id=f"launder-{uid}"),
                  subject="svc.events.queue.customer.arrived")
    as_crm = cloud_event("customer.arrived", f"crm:H-{uid}", {"site": site}, id=f"posted-{uid}")
    posted = await api.post("/api/v1/events", json=as_crm,
                            headers={"Authorization": f"Bearer {token('connector', [site], system='queue')}"})
    assert posted.status_code == 202 and posted.json()["rejected"][0]["kind"] == "unauthorized_source"
    mismatch = await one_failure(api, sre, site=site, kind="source_mismatch")
    unauthorized = await one_failure(api, sre, site=site, kind="unauthorized_source")
    ids = [mismatch["id"], unauthorized["id"]]
    before = await _state(pool, uid, ids)
    assert before["journeys"] == 0 and before["events"] == 0

    for failure in (mismatch, unauthorized):
        refused = await api.post(f"/api/v1/failures/{failure['id']}/retry", headers=sre, json={})
        assert refused.status_code == 409, refused.text
        assert "never retried" in refused.json()["title"] and "discard" in refused.json()["title"]
    assert await _state(pool, uid, ids) == before

    preview = (await api.post("/api/v1/failures/retry", headers=sre, json={"filter": {"site": site}})).json()
    assert (preview["matched"], preview["skipped"]) == (2, 2)
    done = await api.post("/api/v1/failures/retry", headers=sre,
                          json={"dry_run": False, "selection": preview["selection"]})
    assert done.status_code == 200, done.text
    assert (done.json()["results"], done.json()["skipped"]) == ([], 2)
    assert "never retried" in done.json()["note"]
    assert await _state(pool, uid, ids) == before

    discarded = await api.post(f"/api/v1/failures/{mismatch['id']}/discard", headers=sre,
                               json={"reason": "published on the wrong subject"})
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
    after = await _state(pool, uid, ids)
    assert after["journeys"] == 0 and after["events"] == 0


async def test_an_event_beyond_its_sender_s_sites_is_refused_for_that_whatever_else_is_wrong_with_it(
        api, js, pool, token, uid):
    site, other = f"site-{uid}", f"other-{uid}"
    sre = bearer(token, "sre", [site])
    # as a connector limited to `site` publishes (the site as the subject's last token), on another type's
    # subject, about a customer at `other`: refused as a wrong type, a retry (validated without the
    # subject) would apply it at a site its sender may not speak for
    beyond = cloud_event("customer.arrived", f"queue:S-{uid}", {"site": other}, id=f"beyond-{uid}")
    await publish(js, beyond, subject=f"svc.events.queue.ticket.called.{site}")
    # recorded at its sender's site, not the one it claims: nothing of it reaches `other`'s failures
    failure = await one_failure(api, sre, site=site)
    assert (failure["kind"], failure["reason"]) == ("unauthorized_source",
                                                    f"the token does not cover site {other!r}")
    assert await failures_of(api, bearer(token, "sre", [other]), site=other) == []
    before = await _state(pool, uid, [failure["id"]])
    refused = await api.post(f"/api/v1/failures/{failure['id']}/retry", headers=sre, json={})
    assert refused.status_code == 409, refused.text
    assert await _state(pool, uid, [failure["id"]]) == before and before["journeys"] == 0


async def test_bulk_retry_retries_the_others_and_skips_only_the_refused(api, js, pool, token, uid):
    site = f"site-{uid}"
    sre = bearer(token, "sre", [site])
    await publish(js, cloud_event("customer.arrived", f"crm:C-{uid}", {"site": site}),
                  subject="svc.events.queue.customer.arrived")
    # pinned for ever by a date in 2999: invalid, and retried (still failing) like any invalid event
    await publish(js, cloud_event("customer.arrived", f"queue:F-{uid}", {"site": site},
                                  time=datetime(2999, 1, 1, tzinfo=UTC)))
    await one_failure(api, sre, site=site, kind="source_mismatch")
    future = await one_failure(api, sre, site=site, kind="invalid_event")
    assert "future" in future["reason"]
    preview = (await api.post("/api/v1/failures/retry", headers=sre, json={"filter": {"site": site}})).json()
    assert (preview["matched"], preview["skipped"]) == (2, 1)
    done = (await api.post("/api/v1/failures/retry", headers=sre,
                           json={"dry_run": False, "selection": preview["selection"]})).json()
    assert [(r["failure_id"], r["outcome"]) for r in done["results"]] == [(future["id"], "still_failing")]
    assert done["skipped"] == 1
    assert await pool.fetchval("SELECT count(*) FROM journey_refs WHERE ref LIKE $1", f"%-{uid}") == 0


async def test_a_retried_link_across_sites_is_applied_and_leaves_the_site_to_its_owner(
        api, js, pool, token, uid):
    """An `apply_error` retried after the journey it links to was placed at another site by the queue: the
    retry applies it (a claim of another site is no reason to refuse), the journeys join, the site stays the
    queue's (its event is the earliest), and no failure is added."""
    home, elsewhere = f"home-{uid}", f"away-{uid}"
    sre = bearer(token, "sre", [home, elsewhere])
    ticket, customer = f"queue:T-{uid}", f"crm:C-{uid}"
    now = datetime.now(UTC)
    async with refusing_site(pool, elsewhere):
        await publish(js, cloud_event("customer.priority_changed", customer,
                                      {"site": elsewhere, "links": [ticket], "priority": "high",
                                       "reason_code": "vip"}, time=now))
        failure = await one_failure(api, sre, site=elsewhere, kind="apply_error")
    await publish(js, cloud_event("customer.arrived", ticket, {"site": home},
                                  time=now - timedelta(minutes=1)))

    async def site_of(ref: str) -> str | None:
        return await pool.fetchval("SELECT j.site FROM journeys j JOIN journey_refs r ON r.journey_id = j.id"
                                   " WHERE r.ref = $1", ref)

    async def placed_at_home() -> bool:
        return await site_of(ticket) == home

    await eventually(placed_at_home)
    count_failures = "SELECT count(*) FROM failures WHERE site IN ($1, $2)"
    failures_before = await pool.fetchval(count_failures, home, elsewhere)

    retried = await api.post(f"/api/v1/failures/{failure['id']}/retry", headers=sre, json={})
    assert retried.status_code == 200, retried.text
    assert retried.json()["outcome"] == "resolved"
    row = await pool.fetchrow("SELECT kind, status FROM failures WHERE id = $1", failure["id"])
    assert (row["kind"], row["status"]) == ("apply_error", "resolved")
    assert await site_of(customer) == await site_of(ticket) == home
    assert await pool.fetchval(count_failures, home, elsewhere) == failures_before


async def test_a_bulk_retry_selects_the_oldest_500_it_may_retry_and_says_so(api, pool, token, uid):
    """Those refused for who sent them are counted, never taken: older than the rest, they would fill every
    selection and the others would never be reached."""
    site = f"site-{uid}"
    sre = bearer(token, "sre", [site])
    for kind, n in (("unauthorized_source", 5), ("invalid_event", 503)):
        await pool.execute("INSERT INTO failures (dedupe_key, kind, site, reason, payload) SELECT $1 || g,"
                           " $3, $2, 'a reason', '{}' FROM generate_series(1, $4) g", f"bulk-{uid}-{kind}-",
                           site, kind, n)
    preview = (await api.post("/api/v1/failures/retry", headers=sre, json={"filter": {"site": site}})).json()
    assert (preview["matched"], preview["selected"], preview["skipped"]) == (508, 500, 5)
    assert preview["note"] == ("5 refused for who sent them, never retried: discard them; the oldest 500 of"
                               " 503; retry again for the rest")
    done = await api.post("/api/v1/failures/retry", headers=sre,
                          json={"dry_run": False, "selection": preview["selection"]})
    assert done.status_code == 200, done.text
    results = done.json()["results"]
    assert len(results) == 500 and {r["outcome"] for r in results} == {"still_failing"}
    retried = sorted(r["failure_id"] for r in results)

    # ten of them gone: the old selection no longer names the set
    await pool.execute("UPDATE failures SET status = 'discarded' WHERE id = ANY($1::bigint[])", retried[:10])
    stale = await api.post("/api/v1/failures/retry", headers=sre,
                           json={"dry_run": False, "selection": preview["selection"]})
    assert stale.status_code == 409 and "490 match now, not 500" in stale.json()["title"]
    preview = (await api.post("/api/v1/failures/retry", headers=sre, json={"filter": {"site": site}})).json()
    assert (preview["matched"], preview["selected"], preview["skipped"]) == (498, 493, 5)
    assert "retry again" not in preview["note"]
