"""The authorisation matrix: every route (generated from the app's route list) × every role × sites.

`MATRIX` has one line per route: who may call it, a request that exercises it, the status an allowed
caller gets, and how a caller of site A asking for site B's data is answered. A route the app has
and the matrix lacks (or the reverse) fails `test_the_matrix_covers_exactly_the_apps_routes`; a
route whose declared roles differ from its row fails too. Adding a route is adding its line.

Placeholders in paths and bodies are filled from `World`: `{site}` is the caller's own site for the
role cells and the other site for the site cells; `{journey}`, `{failure}`, `{discardable}` are
objects of that site.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httpx
import msgspec
import pytest
import websockets
from litestar.routes import ASGIRoute, WebSocketRoute
from websockets.exceptions import InvalidStatus

from backend.app import create_app
from backend.auth import READ_ROLES
from backend.live.schemas import TOPICS
from switchboard.tokens import ROLES
from tests.support.events import cloud_event, publish
from tests.support.settings import backend_settings
from tests.support.waits import eventually

ANONYMOUS = "anonymous"
PUBLIC_ = None
READ_ = READ_ROLES
SRE_ = frozenset({"sre", "admin"})
CONNECTOR_ = frozenset({"connector", "admin"})
FLOOR_ = frozenset({"floor_staff", "sre", "admin"})  # fallbacks (CONTRACT section 6), rows to come
AUDIT_ = frozenset({"sre", "admin"})
ACK_ = frozenset({"manager", "sre", "admin"})
FLOOR_ = frozenset({"floor_staff", "sre", "admin"})


class Row(msgspec.Struct, frozen=True):
    roles: frozenset[str] | None  # None: public
    path: str
    ok: int | tuple[int, ...] = 200  # what an allowed caller gets for its own site (any of them)
    body: Callable[[dict[str, str]], Any] | None = None
    foreign: bool = False  # the route names a site or a site's object: site B is 403 for a caller of site A
    listing: bool = False  # without a site filter, the answer holds only the caller's sites
    anonymous: int = 401  # what a caller without a token gets
    # a route that acts once on its object: each allowed caller's cell gets an object of its own (the place
    # with its placeholder replaced), so that each is answered `ok`, never "done already" by the one before
    fresh: Callable[[Any, Any, dict[str, str]], Awaitable[dict[str, str]]] | None = None
    # whether the backend itself took that object before the call (then the cell gets another)
    taken: Callable[[Any, dict[str, str]], Awaitable[bool]] | None = None


def _event(w: dict[str, str]) -> dict[str, Any]:
    return cloud_event("customer.arrived", f"queue:M-{uuid.uuid4().hex[:8]}", {"site": w["site"]})


async def no_active_crm_fallback(pool, js, place: dict[str, str]) -> dict[str, str]:
    await pool.execute("UPDATE fallbacks SET status = 'ended', ended_at = now()"
                       " WHERE site = $1 AND system = 'crm' AND status = 'active'", place["site"])
    return place


async def fallback_to_end(pool, js, place: dict[str, str]) -> dict[str, str]:
    await pool.execute("UPDATE fallbacks SET status = 'ended', ended_at = now()"
                       " WHERE site = $1 AND system = 'appointments' AND status = 'active'", place["site"])
    ending = await pool.fetchval("INSERT INTO fallbacks (site, system, reason, started_by)"
                                 " VALUES ($1, 'appointments', 'matrix', 'matrix') RETURNING id",
                                 place["site"])
    return {**place, "ending": str(ending)}


async def customer_waiting(pool, js, place: dict[str, str]) -> dict[str, str]:
    ref = f"queue:MW-{uuid.uuid4().hex[:8]}"
    await publish(js, cloud_event("customer.arrived", ref, {"site": place["site"]}))

    async def journey() -> str | None:
        return await pool.fetchval("SELECT journey_id::text FROM journey_refs WHERE ref = $1", ref)

    found = await eventually(journey)
    assert found, f"{ref} was not applied"
    return {**place, "journey": found}


async def command_to_resend(pool, js, place: dict[str, str]) -> dict[str, str]:
    """A command of the site that failed for good: one attempt more may be asked for."""
    command = uuid.uuid4()
    await pool.execute(
        "INSERT INTO commands (id, rule, system, command, journey_id, refs, site, data, status, attempts)"
        " VALUES ($1, 'matrix', 'queue', 'staff.alert', $2, $3, $4, '{}', 'failed', 5)",
        command, uuid.uuid4(), [f"queue:MX-{place['site']}"], place["site"])
    return {**place, "command": str(command)}


async def alert_to_ack(pool, js, place: dict[str, str]) -> dict[str, str]:
    # one open alert per rule and subject: a rule of its own
    alert = await pool.fetchval("INSERT INTO alerts (rule, kind, subject, site, summary, value, threshold)"
                                " VALUES ($1, 'drift_open', $2, $2, 'matrix', 1, 0) RETURNING id",
                                f"matrix-{uuid.uuid4().hex[:8]}", place["site"])
    return {**place, "alert": str(alert)}


async def alert_resolved_by_the_engine(pool, place: dict[str, str]) -> bool:
    """The backend's alert rules (every second in the suite) resolve an alert of a rule they do not hold: an
    ack that came after that is answered 409, which says nothing of who may ack (it failed once so)."""
    return await pool.fetchval("SELECT status = 'resolved' AND acked_by IS NULL FROM alerts WHERE id = $1",
                               int(place["alert"]))


MATRIX: dict[str, Row] = {
    "GET /health": Row(PUBLIC_, "/health"),
    "GET /ready": Row(PUBLIC_, "/ready"),
    "GET /metrics": Row(PUBLIC_, "/metrics"),
    "POST /api/v1/events": Row(CONNECTOR_, "/api/v1/events", 202, body=_event),
    # signed by the upstream instead of a token (tests/test_webhooks_inbound.py); no secret here: 404
    "POST /api/v1/webhooks/{system:str}": Row(PUBLIC_, "/api/v1/webhooks/queue", 404, body=lambda w: {}),
    "GET /api/v1/journeys": Row(READ_, "/api/v1/journeys?site={site}", foreign=True, listing=True),
    "GET /api/v1/journeys/{journey_id:uuid}": Row(READ_, "/api/v1/journeys/{journey}", foreign=True),
    "GET /api/v1/flow": Row(READ_, "/api/v1/flow?site={site}", foreign=True, listing=True),
    "GET /api/v1/capacity": Row(READ_, "/api/v1/capacity?site={site}", foreign=True, listing=True),
    "GET /api/v1/failures": Row(READ_, "/api/v1/failures?site={site}", foreign=True, listing=True),
    "GET /api/v1/failures/{failure_id:int}": Row(READ_, "/api/v1/failures/{failure}", foreign=True),
    "POST /api/v1/failures/{failure_id:int}/retry": Row(SRE_, "/api/v1/failures/{failure}/retry",
                                                        foreign=True),
    "POST /api/v1/failures/retry": Row(SRE_, "/api/v1/failures/retry", foreign=True,
                                       body=lambda w: {"filter": {"site": w["site"]}, "dry_run": True}),
    "POST /api/v1/failures/{failure_id:int}/discard": Row(SRE_, "/api/v1/failures/{discardable}/discard",
                                                          foreign=True, body=lambda w: {"reason": "matrix"}),
    "GET /api/v1/flow/history": Row(READ_, "/api/v1/flow/history?site={site}", foreign=True, listing=True),
    "GET /api/v1/integrations": Row(READ_, "/api/v1/integrations"),  # health per system, not per site
    "GET /api/v1/reconciliation": Row(READ_, "/api/v1/reconciliation?site={site}", foreign=True,
                                      listing=True),
    "POST /api/v1/reconciliation/runs": Row(SRE_, "/api/v1/reconciliation/runs", 202, foreign=True,
                                            body=lambda w: {"system": "queue", "site": w["site"]}),
    "GET /api/v1/reconciliation/runs/{run_id:int}": Row(READ_, "/api/v1/reconciliation/runs/{run}",
                                                        foreign=True),
    "GET /api/v1/reconciliation/drift": Row(READ_, "/api/v1/reconciliation/drift?site={site}", foreign=True,
                                            listing=True),
    "GET /api/v1/reconciliation/drift/{drift_id:int}": Row(READ_, "/api/v1/reconciliation/drift/{drift}",
                                                           foreign=True),
    "POST /api/v1/reconciliation/drift/{drift_id:int}/resolve": Row(
        SRE_, "/api/v1/reconciliation/drift/{drift}/resolve", foreign=True,
        body=lambda w: {"action": "ignore", "reason": "matrix", "dry_run": True}),
    "POST /api/v1/reconciliation/drift/preview": Row(SRE_, "/api/v1/reconciliation/drift/preview",
                                                     foreign=True,
                                                     body=lambda w: {"filter": {"site": w["site"]}}),
    # a selection previewed as admin of the site, matching nothing: acting on it changes nothing
    "POST /api/v1/reconciliation/drift/resolve": Row(SRE_, "/api/v1/reconciliation/drift/resolve",
                                                     foreign=True,
                                                     body=lambda w: {"selection": w["selection"]}),
    "GET /api/v1/fallbacks": Row(READ_, "/api/v1/fallbacks?site={site}", foreign=True, listing=True),
    "GET /api/v1/fallbacks/{fallback_id:int}": Row(READ_, "/api/v1/fallbacks/{fallback}", foreign=True),
    "GET /api/v1/fallbacks/{fallback_id:int}/ledger": Row(READ_, "/api/v1/fallbacks/{fallback}/ledger",
                                                           foreign=True),
    # one active fallback per site and system: each allowed caller's cell starts at a site without one
    "POST /api/v1/fallbacks": Row(FLOOR_, "/api/v1/fallbacks", 201, foreign=True,
                                  fresh=no_active_crm_fallback,
                                  body=lambda w: {"site": w["site"], "system": "crm", "reason": "matrix"}),
    "POST /api/v1/fallbacks/{fallback_id:int}/actions": Row(
        FLOOR_, "/api/v1/fallbacks/{fallback}/actions", 201, foreign=True,
        body=lambda w: {"action": "check_in"}),
    "POST /api/v1/fallbacks/{fallback_id:int}/end": Row(FLOOR_, "/api/v1/fallbacks/{ending}/end", 200,
                                                        foreign=True, fresh=fallback_to_end,
                                                        body=lambda w: {"reason": "matrix"}),
    "GET /api/v1/sites": Row(READ_, "/api/v1/sites", listing=True),
    "GET /api/v1/sites/{site:str}/floor": Row(READ_, "/api/v1/sites/{site}/floor", foreign=True),
    "GET /api/v1/sites/{site:str}/bookings": Row(READ_, "/api/v1/sites/{site}/bookings", foreign=True),
    # the site's queue has an active fallback here: a call is a manual step (applied or on its way)
    "POST /api/v1/journeys/{journey_id:uuid}/actions": Row(
        FLOOR_, "/api/v1/journeys/{journey}/actions", (201, 202), foreign=True, fresh=customer_waiting,
        body=lambda w: {"action": "call", "counter": "C1", "step_id": uuid.uuid4().hex}),
    "GET /api/v1/commands": Row(READ_, "/api/v1/commands?site={site}", foreign=True, listing=True),
    "GET /api/v1/commands/{command_id:uuid}": Row(READ_, "/api/v1/commands/{command}", foreign=True),
    "POST /api/v1/commands/{command_id:uuid}/resend": Row(SRE_, "/api/v1/commands/{command}/resend", 200,
                                                          foreign=True, fresh=command_to_resend,
                                                          body=lambda w: {}),
    "GET /api/v1/rules": Row(READ_, "/api/v1/rules"),
    "GET /api/v1/audit": Row(AUDIT_, "/api/v1/audit?site={site}", foreign=True),
    "GET /api/v1/reports/daily": Row(READ_, "/api/v1/reports/daily?site={site}", foreign=True),
    "GET /api/v1/alerts": Row(READ_, "/api/v1/alerts?site={site}", foreign=True),
    "GET /api/v1/alerts/rules": Row(READ_, "/api/v1/alerts/rules"),  # the rules in force: configuration
    "GET /api/v1/alerts/{alert_id:int}/deliveries": Row(SRE_, "/api/v1/alerts/{alert}/deliveries",
                                                        foreign=True),
    "POST /api/v1/alerts/{alert_id:int}/ack": Row(ACK_, "/api/v1/alerts/{alert}/ack", 200, foreign=True,
                                                  fresh=alert_to_ack, taken=alert_resolved_by_the_engine,
                                                  body=lambda w: {}),
    # a handshake refused before accept is an HTTP 403 whatever the reason (uvicorn's websocket denial)
    "WS /api/v1/live": Row(READ_, "/api/v1/live", 101, foreign=True, anonymous=403),
    "GET /schema": Row(PUBLIC_, "/schema"),
    "GET /schema/openapi.json": Row(PUBLIC_, "/schema/openapi.json"),
    "GET /schema/openapi.yaml": Row(PUBLIC_, "/schema/openapi.yaml"),
    "GET /schema/openapi.yml": Row(PUBLIC_, "/schema/openapi.yml"),
    "GET /schema/swagger": Row(PUBLIC_, "/schema/swagger"),
    "GET /schema/redoc": Row(PUBLIC_, "/schema/redoc"),
    "GET /schema/rapidoc": Row(PUBLIC_, "/schema/rapidoc"),
    "GET /schema/elements": Row(PUBLIC_, "/schema/elements"),
    "GET /schema/oauth2-redirect.html": Row(PUBLIC_, "/schema/oauth2-redirect.html"),
    "GET /schema/{path:str}": Row(PUBLIC_, "/schema/nothing-here", 404),
}
CALLERS = [ANONYMOUS, *sorted(ROLES)]


def app_routes() -> dict[str, list[str] | str]:
    """Every route of the app as `METHOD path` with the roles it declares, "public" or "undecided"."""
    app = create_app(backend_settings(database_url="postgresql://unused", nats_url="nats://unused",
                              jwt_secret="fake-jwt-secret-for-listing-routes-only"))
    routes: dict[str, list[str] | str] = {}
    for route in app.routes:
        handlers = (getattr(route, "route_handlers", None)
                    or [cast(ASGIRoute | WebSocketRoute, route).route_handler])
        for handler in handlers:
            methods = sorted(getattr(handler, "http_methods", None) or {"WS"})
            for method in methods:
                if method == "OPTIONS":
                    continue  # Litestar's preflight answer: allowed by the guard, carries no data
                roles = handler.opt.get("roles")
                decision = "public" if handler.opt.get("public") else sorted(roles) if roles else "undecided"
                routes[f"{method} {route.path}"] = decision
    return routes


def test_the_matrix_covers_exactly_the_apps_routes():
    routes = app_routes()
    assert sorted(set(routes) - set(MATRIX)) == [], "routes without a matrix row: add one line each"
    assert sorted(set(MATRIX) - set(routes)) == [], "matrix rows for routes the app no longer has"
    expected = {key: (sorted(row.roles) if row.roles else "public") for key, row in MATRIX.items()}
    assert routes == expected
    assert "WS /api/v1/live" in routes, "websocket routes are enumerated too"


class World(msgspec.Struct):
    own: dict[str, str]
    other: dict[str, str]


@pytest.fixture(scope="module")
async def world(backend, js, pool, token) -> World:
    """Site A and site B, each with a journey, capacity, two open failures, a settled command, two active
    fallbacks (one to act in, one to end), a reconciliation run and an open drift item."""
    suffix = uuid.uuid4().hex[:8]
    places = {}
    for name in ("a", "b"):
        site = f"mx{name}-{suffix}"
        arrived = cloud_event("customer.arrived", f"queue:MX-{site}", {"site": site})
        await publish(js, arrived)
        await publish(js, cloud_event("capacity.changed", f"site:{site}", {
            "site": site, "counters_open": 2, "counters_busy": 1, "staff_on_duty": 2, "queue_length": 1},
            source="/queue"))
        failures = [await pool.fetchval(
            "INSERT INTO failures (dedupe_key, kind, system, site, reason, payload) VALUES"
            " ($1, 'invalid_event', 'queue', $2, 'matrix', '{}') RETURNING id",
            f"matrix-{uuid.uuid4().hex}", site)
            for _ in range(2)]
        command = uuid.uuid4()
        await pool.execute(
            "INSERT INTO commands (id, rule, system, command, journey_id, refs, site, data, status)"
            " VALUES ($1, 'matrix', 'queue', 'staff.alert', $2, $3, $4, '{}', 'ok')",
            command, uuid.uuid4(), [f"queue:MX-{site}"], site)

        async def journey(site: str = site) -> str | None:
            return await pool.fetchval("SELECT id::text FROM journeys WHERE site = $1", site)

        async def capacity(site: str = site) -> bool:
            return bool(await pool.fetchval("SELECT count(*) FROM capacity WHERE site = $1", site))

        await eventually(capacity)
        fallback, ending = [await pool.fetchval(
            "INSERT INTO fallbacks (site, system, reason, started_by) VALUES ($1, $2, 'matrix', 'matrix')"
            " RETURNING id", site, system) for system in ("queue", "appointments")]
        run = await pool.fetchval(
            "INSERT INTO reconciliation_runs (system, site, day, trigger, status, finished_at)"
            " VALUES ('queue', $1, current_date, 'on_demand', 'done', now()) RETURNING id", site)
        drift = await pool.fetchval(
            "INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, kind, field, ours, theirs)"
            " VALUES ($1, $2, 'queue', $3, $4, 'state_mismatch', 'counter', '\"C1\"', '\"C2\"') RETURNING id",
            f"matrix|{site}", run, site, f"queue:MX-{site}")
        async with httpx.AsyncClient(base_url=backend.url, timeout=10) as api:
            preview = await api.post("/api/v1/reconciliation/drift/preview",
                                     json={"filter": {"site": site, "kind": "stale"}},
                                     headers={"Authorization": f"Bearer {token('admin', [site])}"})
        alert = await pool.fetchval(
            "INSERT INTO alerts (rule, kind, subject, site, summary, value, threshold) VALUES"
            " ('matrix', 'drift_open', $1, $1, 'matrix', 1, 0) RETURNING id", site)
        places[name] = {"alert": str(alert), "site": site, "journey": await eventually(journey),
                        "failure": str(failures[0]), "discardable": str(failures[1]),
                        "fallback": str(fallback), "ending": str(ending), "run": str(run),
                        "drift": str(drift), "command": str(command),
                        "selection": preview.json()["selection"]}
    return World(own=places["a"], other=places["b"])


def headers_for(caller: str, token: Callable[..., str], site: str) -> dict[str, str]:
    if caller == ANONYMOUS:
        return {}
    return {"Authorization": f"Bearer {token(caller, [site], system='queue')}"}


async def call(api: httpx.AsyncClient, route: str, place: dict[str, str],
               headers: dict[str, str]) -> httpx.Response:
    row = MATRIX[route]
    body = row.body(place) if row.body else None
    return await api.request(route.split()[0], row.path.format(**place), json=body, headers=headers)


def expected_statuses(row: Row, caller: str) -> tuple[int, ...]:
    ok = row.ok if isinstance(row.ok, tuple) else (row.ok,)
    if row.roles is None:
        return ok
    if caller == ANONYMOUS:
        return (row.anonymous,)
    return ok if caller in row.roles else (403,)


async def ws_status(backend, headers: dict[str, str]) -> int:
    try:
        async with websockets.connect(backend.url.replace("http", "ws", 1) + "/api/v1/live",
                                      additional_headers=headers, open_timeout=10):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", sorted(MATRIX))
async def test_each_role_gets_what_its_row_says(api, backend, token, world, pool, js, route, caller):
    row = MATRIX[route]
    headers = headers_for(caller, token, world.own["site"])
    if route.startswith("WS "):
        assert await ws_status(backend, headers) in expected_statuses(row, caller)
        return
    allowed = row.roles is not None and caller in row.roles
    for _ in range(3):
        place = await row.fresh(pool, js, world.own) if row.fresh and allowed else world.own
        response = await call(api, route, place, headers)
        if not (allowed and row.taken and await row.taken(pool, place)):
            break
    assert response.status_code in expected_statuses(row, caller), response.text
    if response.status_code in (401, 403):
        assert response.headers["content-type"].startswith("application/problem+json")


async def failure_state(pool, place: dict[str, str]) -> list[tuple[Any, ...]]:
    """What a refused call must leave as it was: the site's failures, fallbacks, ledger, runs and drift."""
    rows = await pool.fetch("SELECT id, status, attempts, acted_by, last_at FROM failures"
                            " WHERE id = ANY($1::bigint[]) ORDER BY id",
                            [int(place["failure"]), int(place["discardable"])])
    fallbacks = await pool.fetch("SELECT id, status, ended_at FROM fallbacks WHERE site = $1 ORDER BY id",
                                 place["site"])
    ledger = await pool.fetchval("SELECT count(*) FROM fallback_ledger l"
                                 " JOIN fallbacks f ON f.id = l.fallback_id WHERE f.site = $1", place["site"])
    runs = await pool.fetchval("SELECT count(*) FROM reconciliation_runs WHERE site = $1", place["site"])
    drift = await pool.fetch("SELECT id, status, action FROM drift_items WHERE site = $1 ORDER BY id",
                             place["site"])
    return [tuple(r) for r in (*rows, *fallbacks, *drift)] + [(ledger, runs)]


@pytest.mark.parametrize("route", sorted(k for k, row in MATRIX.items()
                                         if row.foreign and not k.startswith("WS ")))
async def test_site_b_asked_for_by_a_user_of_site_a_is_refused_and_nothing_changes(api, pool, token, world,
                                                                                    route):
    row = MATRIX[route]
    assert row.roles is not None
    before = await failure_state(pool, world.other)
    # by the tests' own users: the backend audits what it does by itself (a replay) as "switchboard"
    audited = "SELECT count(*) FROM audit_log WHERE actor LIKE 'test-%'"
    audit_rows = await pool.fetchval(audited)
    for role in sorted(row.roles):
        response = await call(api, route, world.other, headers_for(role, token, world.own["site"]))
        assert response.status_code == 403, (role, response.text)
    assert await failure_state(pool, world.other) == before
    assert await pool.fetchval(audited) == audit_rows


@pytest.mark.parametrize("route", sorted(k for k, row in MATRIX.items() if row.listing))
async def test_lists_without_a_site_filter_hold_only_the_callers_sites(api, token, world, route):
    path = MATRIX[route].path.split("?")[0]
    both = {world.own["site"], world.other["site"]}
    admin_of_both = {"Authorization": f"Bearer {token('admin', sorted(both))}"}
    everything = (await api.get(path, headers=admin_of_both)).json()["items"]
    assert both <= {item["site"] for item in everything}, "both sites have data here"
    for role in sorted(READ_ROLES):
        items = (await api.get(path, headers=headers_for(role, token, world.own["site"]))).json()["items"]
        assert {item["site"] for item in items} == {world.own["site"]}, role


@pytest.mark.parametrize("role", sorted(READ_ROLES))
async def test_every_live_topic_is_scoped_to_the_tokens_sites(backend, token, world, role):
    url = backend.url.replace("http", "ws", 1) + "/api/v1/live"
    headers = headers_for(role, token, world.own["site"])
    async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
        async def answer() -> dict[str, Any]:
            return msgspec.json.decode(await ws.recv())

        elsewhere = {"op": "subscribe", "topics": list(TOPICS), "sites": [world.other["site"]]}
        await ws.send(msgspec.json.encode(elsewhere).decode())
        refused = await answer()
        assert refused["op"] == "error" and world.other["site"] in refused["reason"]
        await ws.send(msgspec.json.encode({"op": "subscribe", "topics": list(TOPICS)}).decode())
        snapshots: dict[str, list[dict[str, Any]]] = {}  # topic -> its snapshot's items
        while len(snapshots) < len(TOPICS):
            frame = await answer()
            if frame["op"] == "snapshot":
                snapshots[frame["topic"]] = frame["data"]
    for topic, data in snapshots.items():
        assert set().union(*(sites_of(topic, item) for item in data)) <= {world.own["site"]}, topic
    for topic in ("journeys", "fallbacks", "reconciliation"):
        seen = set().union(*(sites_of(topic, item) for item in snapshots[topic]))
        assert seen == {world.own["site"]}, topic


def sites_of(topic: str, item: dict[str, Any]) -> set[str]:
    """The sites a snapshot item belongs to; integration health is per system, for every reader."""
    match topic:
        case "integrations":
            return set()
        case "alerts":  # an alert of no site (a system down) concerns every reader
            return {item["site"]} - {None}
        case "reconciliation":
            return {cast(dict[str, Any], item.get("status") or item.get("drift"))["site"]}
        case _:
            return {item["site"]}
