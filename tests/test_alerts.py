"""Alerts (CONTRACT section 11) on two replicas of a stack of their own: raised once whichever replica sees
the condition, announced on the live topic `alerts` to the sites concerned, acknowledged by a manager or an
SRE (audited), resolved by themselves, and delivered as signed Standard Webhooks with retries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from backend.alerts.rules import DEFAULT_RULES, AlertRulesError, load_alert_rules, parse_rules
from backend.alerts.services import shown_target
from switchboard.tokens import mint_token
from tests.support.backends import Stack, start_backend
from tests.support.connector_double import heartbeat
from tests.support.events import cloud_event, publish
from tests.support.live import connect, is_update, receive_until, subscribe
from tests.support.waits import eventually
from tests.support.webhook_receiver import ALERT_SECRET, Received, Receiver, webhook_receiver


def _token(stack: Stack, role: str, sites: list[str] | str = "*") -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(stack.settings.tokens, sub=f"alert-{role}", roles=[role],
                                                    sites=sites, ttl=timedelta(hours=1))}


async def _alerts(stack: Stack, headers: dict[str, str], backend: int = 0,
                  **params: Any) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=stack.backends[backend].url, timeout=10) as http:
        response = await http.get("/api/v1/alerts", params=params, headers=headers)
    response.raise_for_status()
    return response.json()["items"]


async def _one(stack: Stack, rule: str, subject: str, status: str) -> dict[str, Any] | None:
    items = await _alerts(stack, _token(stack, "sre"), status=status)
    found = [a for a in items if a["rule"] == rule and a["subject"] == subject]
    return found[0] if found else None


async def test_a_wait_over_target_alert_is_raised_once_across_replicas_announced_and_resolved_by_itself(
        alert_stack: tuple[Stack, Receiver], uid: str) -> None:
    stack, receiver = alert_stack
    site, other = f"site-{uid}", f"other-{uid}"
    scoped = mint_token(stack.settings.tokens, sub="alert-floor", roles=["floor_staff"], sites=[site],
                        ttl=timedelta(hours=1))
    outsider = mint_token(stack.settings.tokens, sub="alert-outsider", roles=["manager"], sites=[other],
                          ttl=timedelta(hours=1))
    async with connect(stack.backends[1], scoped) as ws, connect(stack.backends[0], outsider) as ws_other:
        assert (await subscribe(ws, ["alerts"]))["alerts"]["data"] == []
        await subscribe(ws_other, ["alerts"])
        # someone arrived five minutes ago at a site whose target is one minute: over it for four minutes
        arrived = datetime.now(UTC) - timedelta(minutes=5)
        await publish(stack.js, cloud_event("customer.arrived", f"queue:T-{uid}", {"site": site},
                                            time=arrived))
        raised, _ = await receive_until(ws, is_update("alerts", lambda f: f["data"]["subject"] == site))
        assert raised["site"] == site and raised["data"]["status"] == "open"
        assert raised["data"]["rule"] == "wait-over-target" and raised["data"]["threshold"] == 1
        assert raised["data"]["value"] >= 5 and "over its 1 min target" in raised["data"]["summary"]
        # both replicas keep evaluating: still exactly one alert ever, and each replica answers with it
        await eventually(lambda: _one(stack, "wait-over-target", site, "open"))
        for backend in (0, 1):
            items = await _alerts(stack, _token(stack, "manager", [site]), backend, status="active")
            assert [a["id"] for a in items] == [raised["data"]["id"]]
        assert await stack.pool.fetchval("SELECT count(*) FROM alerts WHERE subject = $1", site) == 1
        assert await _alerts(stack, {"Authorization": f"Bearer {outsider}"}, status="active") == [
            a for a in await _alerts(stack, _token(stack, "sre"), status="active") if a["site"] is None]

        # the customer is called: nobody waits past the target any more, and the alert resolves itself
        await publish(stack.js, cloud_event("ticket.called", f"queue:T-{uid}",
                                            {"site": site, "counter": "1"}))
        resolved, _ = await receive_until(
            ws, is_update("alerts", lambda f: f["key"] == str(raised["data"]["id"])
                          and f["data"]["status"] == "resolved"))
        assert resolved["data"]["resolved_at"] is not None
        assert await _alerts(stack, _token(stack, "manager", [site]), status="active") == []
        # the other site's reader heard nothing of it
        frames = []
        while True:
            try:
                frames.append(await receive_until(ws_other, lambda f: f["op"] == "update", timeout=0.5))
            except AssertionError:
                break
        assert not [f for f, _ in frames if f["data"]["subject"] == site]

    # each event delivered once to the receiver after a 503, signed, the same webhook-id on the retry
    signer = Webhook(ALERT_SECRET)

    def deliveries() -> list[Received]:
        return [r for r in receiver.delivered() if msgspec.json.decode(r.body)["data"]["subject"] == site]

    await eventually(lambda: _async(len(deliveries()) == 2))
    ids = []
    for request in deliveries():
        body = signer.verify(request.body, request.headers)
        ids.append(request.headers["webhook-id"])
        attempts = [r for r in receiver.requests if r.headers["webhook-id"] == request.headers["webhook-id"]]
        assert [r.answered for r in attempts] == [503, 204]
        assert body["data"]["id"] == raised["data"]["id"]
    delivered_types = sorted(msgspec.json.decode(r.body)["type"] for r in deliveries())
    assert delivered_types == ["alert.raised", "alert.resolved"]
    assert len(set(ids)) == 2
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=10) as http:
        path = f"/api/v1/alerts/{raised['data']['id']}/deliveries"
        shown = (await http.get(path, headers=_token(stack, "sre", [site]))).json()["items"]
        assert (await http.get(path, headers=_token(stack, "manager", [site]))).status_code == 403
        assert (await http.get(path, headers=_token(stack, "sre", [other]))).status_code == 403
    assert [(d["event"], d["status"], d["attempts"], d["last_error"], d["target"]) for d in shown] == [
        ("alert.raised", "delivered", 2, None, shown_target(receiver.url)),
        ("alert.resolved", "delivered", 2, None, shown_target(receiver.url))]
    assert shown_target(receiver.url) == receiver.url.removesuffix("/hooks") + "/…"  # its path hidden


async def _async(value: Any) -> Any:
    return value


async def test_acknowledging_an_alert_takes_a_manager_or_sre_of_its_site_and_is_audited(
        alert_stack: tuple[Stack, Receiver], uid: str) -> None:
    stack, _ = alert_stack
    site = f"ack-{uid}"
    await publish(stack.js, cloud_event("customer.arrived", f"queue:A-{uid}", {"site": site},
                                        time=datetime.now(UTC) - timedelta(minutes=5)))
    alert = await eventually(lambda: _one(stack, "wait-over-target", site, "open"))
    path = f"/api/v1/alerts/{alert['id']}/ack"
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=10) as http:
        assert (await http.post(path)).status_code == 401
        for role, sites, status in (("floor_staff", [site], 403), ("floor_staff", "*", 403),
                                    ("manager", ["elsewhere"], 403)):
            response = await http.post(path, headers=_token(stack, role, sites), json={})
            assert response.status_code == status, (role, response.text)
        unknown = await http.post("/api/v1/alerts/987654321/ack", headers=_token(stack, "sre"))
        assert unknown.status_code == 404
        assert (await http.post(path, headers=_token(stack, "manager", [site]),
                                json={"nope": 1})).status_code == 400
        acked = await http.post(path, headers=_token(stack, "manager", [site]), json={"note": "on it"})
        assert acked.status_code == 200, acked.text
        assert acked.json()["status"] == "acknowledged" and acked.json()["acked_by"] == "alert-manager"
        again = await http.post(path, headers=_token(stack, "sre"))
        assert again.status_code == 409 and "the alert is acknowledged" in again.text
        bad = await http.get("/api/v1/alerts", params={"status": "sleeping"}, headers=_token(stack, "sre"))
        assert bad.status_code == 400
        refused = await http.get("/api/v1/alerts", params={"site": site},
                                 headers=_token(stack, "manager", ["x"]))
        assert refused.status_code == 403
    audit = await stack.pool.fetchrow("SELECT actor, action, reason, site FROM audit_log WHERE target = $1",
                                      f"alert:{alert['id']}")
    assert (audit["actor"], audit["action"], audit["reason"]) == ("alert-manager", "alert.ack", "on it")
    assert audit["site"] == site, "the audit log's site filter finds the acknowledgement"
    # acknowledged is still active, and resolves by itself like any alert
    assert await _one(stack, "wait-over-target", site, "acknowledged")
    await publish(stack.js, cloud_event("ticket.called", f"queue:A-{uid}", {"site": site, "counter": "2"}))
    assert (await eventually(lambda: _one(stack, "wait-over-target", site, "resolved")))["acked_at"]


async def test_a_system_down_alert_concerns_every_site_and_clears_when_it_is_back(
        alert_stack: tuple[Stack, Receiver], uid: str) -> None:
    stack, _ = alert_stack
    system, connector = "lab_health", f"lab-alert-{uid}"
    await publish(stack.js, heartbeat(system, connector, "down"))
    alert = await eventually(lambda: _one(stack, "system-down", system, "open"))
    assert alert["site"] is None and alert["summary"].startswith(f"System {system} down for")
    # a reader of one site sees it too: a system down concerns every site
    assert [a["id"] for a in await _alerts(stack, _token(stack, "floor_staff", [f"s-{uid}"]), status="open")
            if a["rule"] == "system-down"] == [alert["id"]]
    # but it is acknowledged for every site, so only by someone of every site
    path = f"/api/v1/alerts/{alert['id']}/ack"
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=10) as http:
        one_site = await http.post(path, headers=_token(stack, "manager", [f"s-{uid}"]), json={})
        assert one_site.status_code == 403 and "every site" in one_site.text, one_site.text
        assert (await _one(stack, "system-down", system, "open")) is not None
        every_site = await http.post(path, headers=_token(stack, "sre"), json={})
        assert (every_site.status_code, every_site.json()["status"]) == (200, "acknowledged"), every_site.text
    await publish(stack.js, heartbeat(system, connector, "up"))
    await eventually(lambda: _one(stack, "system-down", system, "resolved"))


async def test_failures_piling_up_and_open_drift_raise_alerts_for_their_site(
        alert_stack: tuple[Stack, Receiver], uid: str) -> None:
    stack, _ = alert_stack
    site = f"fail-{uid}"
    # two commands of a journey at the site failed in the last two minutes: one a minute, over 0.5
    for n in range(2):
        await stack.pool.execute(
            "INSERT INTO failures (dedupe_key, kind, site, reason, payload) VALUES ($1, 'command_failed', $2,"
            " 'upstream said no', '{}')", f"alert-test-{uid}-{n}", site)
    alert = await eventually(lambda: _one(stack, "failures-piling-up", site, "open"))
    assert alert["value"] == 1 and alert["threshold"] == 0.5
    run = await stack.pool.fetchval(
        "INSERT INTO reconciliation_runs (system, site, day, trigger) VALUES ('queue', $1, current_date,"
        " 'on_demand') RETURNING id", site)
    drift = await stack.pool.fetchval(
        "INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, kind) VALUES ($1, $2, 'queue', $3,"
        " 'queue:D-1', 'missing_here') RETURNING id", f"alert-{uid}", run, site)
    assert (await eventually(lambda: _one(stack, "drift-open", site, "open")))["site"] == site
    await stack.pool.execute("UPDATE drift_items SET status = 'resolved', resolved_at = now() WHERE id = $1",
                             drift)
    await eventually(lambda: _one(stack, "drift-open", site, "resolved"))


async def test_the_alert_rules_in_force_are_listed_with_their_active_alerts_among_the_readers_sites(
        alert_stack: tuple[Stack, Receiver], uid: str) -> None:
    stack, _ = alert_stack
    site = f"rules-{uid}"
    await publish(stack.js, cloud_event("customer.arrived", f"queue:R-{uid}", {"site": site},
                                        time=datetime.now(UTC) - timedelta(minutes=5)))
    await eventually(lambda: _one(stack, "wait-over-target", site, "open"))
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=10) as http:
        assert (await http.get("/api/v1/alerts/rules")).status_code == 401

        async def rules(sites: list[str]) -> dict[str, dict[str, Any]]:
            answer = await http.get("/api/v1/alerts/rules", headers=_token(stack, "floor_staff", sites))
            return {r["name"]: r for r in answer.json()["items"]}

        mine, theirs = await rules([site]), await rules([f"none-{uid}"])
    assert list(mine) == ["system-down", "wait-over-target", "failures-piling-up", "drift-open"]
    assert mine["failures-piling-up"]["kind"] == "failure_rate"
    assert mine["failures-piling-up"]["settings"] == {"for_minutes": 0, "per_minute": 0.5,
                                                      "window_minutes": 2}
    assert mine["wait-over-target"]["active"] == 1 and theirs["wait-over-target"]["active"] == 0
    await publish(stack.js, cloud_event("ticket.called", f"queue:R-{uid}", {"site": site, "counter": "1"}))
    await eventually(lambda: _one(stack, "wait-over-target", site, "resolved"))


def test_alert_rules_files_are_checked_and_name_what_is_wrong() -> None:
    rules = parse_rules('[[rules]]\nname = "slow"\nkind = "wait_over_target"\nfor_minutes = 2\n'
                        '[[rules]]\nname = "noisy"\nkind = "failure_rate"\nper_minute = 1.5\n')
    assert [(type(r).__name__, r.name, r.for_minutes) for r in rules] == [("WaitOverTarget", "slow", 2),
                                                                         ("FailureRate", "noisy", 0)]
    assert load_alert_rules("") == DEFAULT_RULES
    for text, reason in (('[[rules]]\nname = "x"\nkind = "weather"\n', "Invalid value 'weather'"),
                         ('[[rules]]\nname = "x"\nkind = "drift_open"\nfor_minutes = -1\n', ">= 0"),
                         ('[[rules]]\nname = "x"\nkind = "drift_open"\nper_minute = 1\n', "unknown field"),
                         ('[[rules]]\nname = "x"\nkind = "drift_open"\n' * 2, "share a name"),
                         ("[[rules]\n", "alert rules file")):
        with pytest.raises(AlertRulesError, match=reason):
            parse_rules(text)


@pytest.mark.parametrize(("secret", "reason"), [("", "needs SWITCHBOARD_ALERT_WEBHOOK_SECRET"),
                                               ("whsec_!!!", "not a Standard Webhooks key"),
                                               ("whsec_dGVzdA==", "a key of 4 bytes")])
def test_a_backend_with_alert_webhooks_but_no_usable_secret_refuses_to_start(settings, workdir: Path, secret,
                                                                              reason) -> None:
    with webhook_receiver() as receiver, pytest.raises(RuntimeError, match=reason):
        start_backend(settings, workdir / f"backend-nosecret-{uuid.uuid4().hex[:8]}.log",
                      {"SWITCHBOARD_ALERT_WEBHOOKS": receiver.url,
                       "SWITCHBOARD_ALERT_WEBHOOK_SECRET": secret}).stop()  # stopped, had it started


def test_a_backend_with_an_alert_receiver_that_is_no_url_refuses_to_start(settings, workdir: Path) -> None:
    # such a receiver made every attempt of its batch raise: their outcomes were lost, and sent again
    with pytest.raises(RuntimeError, match="receiver 2: the target must be an http"):
        start_backend(settings, workdir / f"backend-badreceiver-{uuid.uuid4().hex[:8]}.log",
                      {"SWITCHBOARD_ALERT_WEBHOOKS": "https://hooks.example.org/a,https://hooks.example.org:99999/b",
                       "SWITCHBOARD_ALERT_WEBHOOK_SECRET": ALERT_SECRET}).stop()  # stopped, had it started


def test_an_alert_receiver_is_shown_without_its_credentials() -> None:
    # the credentials are made here so that no tracked file holds one (tests/test_secrets.py)
    userinfo = f"user:{uuid.uuid4().hex}"
    shown = shown_target(f"https://{userinfo}@hooks.example.org:8443/a/b?token=x#f")
    assert shown == "https://hooks.example.org:8443/…"
    assert shown_target("https://hooks.example.org") == shown_target("https://hooks.example.org/") == \
        "https://hooks.example.org"
