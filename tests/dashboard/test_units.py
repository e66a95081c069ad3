"""The dashboard's logic without a browser: coalescing, live state, capabilities, claims, banner text."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, date, datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import jwt
import pytest

from dashboard import charts
from dashboard.backend_client import BackendClient, BackendError, Capabilities
from dashboard.coalesce import MIN_INTERVAL_S, Coalescer, LatestRead
from dashboard.context import MAX_REFUSALS, Dashboard, Viewer
from dashboard.frame import banner_text, connection_text
from dashboard.live import (
    HISTORY_POINTS,
    HISTORY_STEP_S,
    MAX_ITEMS_PER_TOPIC,
    FlowPoint,
    LiveConnection,
    LiveRegistry,
    LiveState,
    seed_history,
)
from dashboard.pages.alerts import EVERY_SITE_ACK, ack_refusal
from dashboard.pages.capacity import over_target
from dashboard.pages.commands import resend_offered
from dashboard.pages.failures import ANY, SHOWN, count_text, failures_path, site_block
from dashboard.pages.fallback import reference_label, steps_of
from dashboard.pages.floor import badges, wait_shown, wait_text
from dashboard.pages.journey import attempts_text
from dashboard.pages.reports import latest_day
from dashboard.session import Principal, Sessions
from dashboard.sites import site_book
from switchboard.claims_map import parse_claims_map
from tests.support.settings import dashboard_settings
from tests.support.waits import eventually
from tools.embedded import free_port


async def test_a_burst_of_changes_renders_at_most_four_times_a_second_and_ends_on_the_latest_state():
    seen: list[int] = []
    state = {"value": 0}
    coalescer = Coalescer(lambda: seen.append(state["value"]))
    start = time.monotonic()
    for _ in range(300):
        state["value"] += 1
        coalescer.changed()
        await asyncio.sleep(0.001)
    burst_s = time.monotonic() - start

    async def ended_on_the_latest() -> bool:
        return bool(seen) and seen[-1] == state["value"]

    await eventually(ended_on_the_latest)
    # one at once, then at most one per interval of the burst, and the last one after it
    assert 2 <= coalescer.renders <= burst_s / MIN_INTERVAL_S + 2
    coalescer.close()


async def test_a_closed_coalescer_never_renders_again():
    renders: list[None] = []
    coalescer = Coalescer(lambda: renders.append(None))
    coalescer.changed()
    coalescer.close()
    coalescer.changed()
    await asyncio.sleep(0.3)
    assert renders == []


def test_live_state_keeps_the_latest_item_per_key_bounded_and_in_order_of_change():
    state = LiveState()
    for i in range(MAX_ITEMS_PER_TOPIC + 10):
        state.apply("journeys", str(i), {"id": str(i), "stage": "booked"})
    state.apply("journeys", "20", {"id": "20", "stage": "arrived"})
    journeys = state.items["journeys"]
    assert len(journeys) == MAX_ITEMS_PER_TOPIC
    assert "0" not in journeys and list(journeys)[-1] == "20" and journeys["20"]["stage"] == "arrived"


def test_flow_history_keeps_one_point_per_step_with_the_latest_rates():
    state = LiveState()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    flow = {"site": "north", "arrivals_per_min": 1.0, "completions_per_min": 0.5}
    state._record_flow(flow, now=t0)
    state._record_flow({**flow, "arrivals_per_min": 2.0}, now=t0 + timedelta(seconds=HISTORY_STEP_S / 2))
    state._record_flow({**flow, "arrivals_per_min": 3.0}, now=t0 + timedelta(seconds=HISTORY_STEP_S))
    points = state.flow_history["north"]
    next_step = t0 + timedelta(seconds=HISTORY_STEP_S)
    assert [(p.time, p.arrivals_per_min) for p in points] == [(t0, 2.0), (next_step, 3.0)]


def test_the_backends_past_goes_before_the_live_points_once():
    history: dict = {}
    t0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    live = FlowPoint(t0 + timedelta(minutes=3), 5.0, 4.0)
    history["north"] = deque([live], maxlen=HISTORY_POINTS)
    past = [FlowPoint(t0 + timedelta(minutes=m), float(m), 0.0) for m in range(4)]
    seed_history(history, "north", past)
    seed_history(history, "north", past)  # a second page open adds nothing
    assert [p.arrivals_per_min for p in history["north"]] == [0.0, 1.0, 2.0, 5.0]
    seed_history(history, "south", past)
    assert len(history["south"]) == 4


async def test_a_lost_backend_is_reported_with_the_time_it_was_lost_and_retried_with_backoff():
    connection = LiveConnection(f"http://127.0.0.1:{free_port()}", "not-a-real-token")
    changes: list[bool] = []
    connection.listen("connection", lambda: changes.append(connection.state.connected))
    before, started = datetime.now(UTC), time.monotonic()
    connection.start()
    while connection.state.attempts < 3:  # the test's timeout bounds it
        await asyncio.sleep(0.01)
    waited = time.monotonic() - started
    await connection.stop()
    state = connection.state
    assert not state.connected and state.lost_since is not None and state.lost_since >= before
    # backoff doubles from 0.5 s (jitter ±20%): a third attempt 0.4 + 0.8 s after the first at the earliest
    assert waited >= 1.2, waited
    assert changes and not any(changes)
    assert connection_text(state).startswith(
        f"Connection to the backend lost since {state.lost_since:%H:%M:%S} UTC")


def test_banner_text_is_empty_while_connected_and_final_when_the_token_is_refused():
    assert connection_text(LiveState(connected=True)) == ""
    assert connection_text(LiveState()) == "Connecting to the backend…"
    assert "sign in again" in connection_text(LiveState(ended="the token expired: sign in again"))


def test_capabilities_normalise_path_parameters():
    capabilities = Capabilities.from_openapi({"paths": {
        "/api/v1/journeys/{journey_id}": {"get": {}, "parameters": []},
        "/api/v1/failures": {"get": {}},
    }})
    assert capabilities.has("GET", "/api/v1/journeys/{id}")
    assert not capabilities.has("POST", "/api/v1/failures")
    assert not capabilities.has("POST", "/api/v1/failures/{failure_id}/retry")


def test_principal_reads_roles_and_sites_and_expiry_from_the_claims():
    exp = int(time.time()) + 60
    token = jwt.encode({"sub": "u1", "roles": ["sre"], "sites": ["north", "south"], "exp": exp}, "k" * 32)
    principal = Principal.from_token(token)
    assert principal.roles == {"sre"} and principal.sites == ("north", "south") and not principal.expired
    assert principal.may_act_on_failures and principal.has("sre") and not principal.has("floor_staff")
    manager = Principal.from_token(jwt.encode({"sub": "m", "roles": ["manager"], "sites": "*"}, "k" * 32))
    assert manager.sites is None and manager.may_read and not manager.may_act_on_failures


def test_an_expired_token_signs_its_session_out():
    sessions = Sessions()
    expired = jwt.encode({"sub": "u", "roles": ["manager"], "exp": int(time.time()) - 1}, "k" * 32)
    sessions.sign_in("browser", expired)
    assert sessions.token("browser") is None


async def test_a_sign_in_signed_out_in_one_tab_no_longer_reaches_the_backend_from_another(settings):
    sessions = Sessions()
    token = jwt.encode({"sub": "u", "roles": ["floor_staff"], "exp": int(time.time()) + 600}, "k" * 32)
    sessions.sign_in("tablet", token)
    held = sessions.current("tablet")  # what every open tab of the browser holds
    assert held is not None
    board = Dashboard(settings=dashboard_settings(settings.tokens), backend_url="http://127.0.0.1:1",
                      demo=False)
    tab = Viewer(dashboard=board, browser_id="tablet", sign_in=held, principal=Principal.from_token(token),
                 live=LiveConnection(board.backend_url, token), capabilities=None, sites=site_book([], None))
    async with tab.http() as http:  # signed in: the backend is reached with the tab's token
        assert isinstance(http, BackendClient)
    sessions.sign_out("tablet")
    with pytest.raises(BackendError, match="signed out"):
        tab.http()


def test_the_failures_shown_are_the_backends_open_ones_matching_every_chosen_filter_by_impact():
    path = urlsplit(failures_path({"kind": "pii_rejected", "system": ANY, "site": "north"}))
    assert path.path == "/api/v1/failures"
    assert parse_qs(path.query) == {"status": ["open"], "order": ["impact"], "limit": [str(SHOWN)],
                                    "kind": ["pii_rejected"], "site": ["north"]}
    assert count_text(1, more=False) == "1 open failure match"
    assert count_text(SHOWN, more=True).startswith(f"The {SHOWN} open failures touching customers most")


def test_reports_end_on_the_latest_of_the_shown_sites_own_todays():
    late_utc = datetime(2026, 12, 4, 20, 5, tzinfo=UTC)
    kathmandu, los_angeles = ZoneInfo("Asia/Kathmandu"), ZoneInfo("America/Los_Angeles")
    assert latest_day(late_utc, [kathmandu, los_angeles]) == date(2026, 12, 5)  # already tomorrow there
    assert latest_day(datetime(2026, 12, 5, 2, 0, tzinfo=UTC), [los_angeles]) == date(2026, 12, 4)
    assert latest_day(late_utc, []) == date(2026, 12, 4)


def test_a_site_over_its_wait_target_stands_out_and_one_without_an_estimate_does_not():
    assert over_target({"est_wait_s": 601.0}, 600.0)
    assert not over_target({"est_wait_s": 600.0}, 600.0)
    assert not over_target({"est_wait_s": None}, 600.0)


def test_time_charts_draw_utc_wall_clocks_and_say_so():
    """plotly.js ignores a date's offset: a point at 10:00+05:45 must be drawn at 04:15 on an axis in UTC."""
    kathmandu = timezone(timedelta(hours=5, minutes=45))
    point = FlowPoint(datetime(2026, 12, 6, 10, 0, tzinfo=kathmandu), 1.0, 0.5)
    figure = charts.per_minute({"north": [point]})
    assert figure["data"][0]["x"] == ["2026-12-06T04:15:00"]
    assert figure["layout"]["xaxis"]["title"]["text"] == "time (UTC)"


def test_each_site_is_held_to_its_own_wait_target_and_one_without_to_the_boards():
    book = site_book([{"site": "north", "wait_target_s": 1200.0}, {"site": "south"}], None)
    assert (book.wait_target_s("north", 600.0), book.wait_target_s("south", 600.0)) == (1200.0, 600.0)
    assert book.wait_target_s("unlisted", 600.0) == 600.0
    capacity = {"site": "north", "est_wait_s": 900.0}
    assert not over_target(capacity, book.wait_target_s("north", 600.0)) and over_target(capacity, 600.0)
    flows = [{"site": s, "wait_p50_s": 60.0, "wait_p90_s": 120.0, "service_p50_s": None}
             for s in ("north", "south")]
    target = charts.percentiles(flows, [1200.0, 600.0])["data"][-1]
    assert (target["name"], target["x"], target["y"]) == ("wait target", ["north", "south"], [20.0, 10.0])


def test_stage_totals_add_sites_up_and_ignore_stages_outside_the_funnel():
    flows = [{"stages": {"booked": 2, "completed": 1, "cancelled": 5}},
             {"stages": {"booked": 1, "waiting": 4}}]
    totals = charts.stage_totals(flows)
    assert totals["booked"] == 3 and totals["waiting"] == 4 and totals["completed"] == 1
    assert "cancelled" not in totals
    figure = charts.funnel(totals)
    assert figure["data"][0]["x"] == [3, 0, 4, 0, 0, 1]


def test_connections_of_one_process_share_the_flow_history():
    registry = LiveRegistry("http://127.0.0.1:1")
    first = LiveConnection(registry.backend_url, "a", flow_history=registry.flow_history)
    second = LiveConnection(registry.backend_url, "b", flow_history=registry.flow_history)
    first.state.apply("flow", "north", {"site": "north", "arrivals_per_min": 1.0, "completions_per_min": 0.0})
    assert [p.arrivals_per_min for p in second.state.flow_history["north"]] == [1.0]


def test_times_show_in_the_site_s_own_zone_and_say_which_zone_they_are_in():
    book = site_book([{"site": "north", "time_zone": "Europe/Amsterdam", "wait_target_s": 600},
                      {"site": "east", "time_zone": "Asia/Kathmandu", "wait_target_s": 900}], ("north",))
    at = "2026-12-04T14:05:09.123456+00:00"
    assert book.time(at, "north") == "15:05:09 CET"
    assert book.time(at, "east") == "19:50:09 +0545"
    assert book.time(at, "east", seconds=False) == "19:50 +0545"
    assert book.time(at, "unlisted") == "14:05:09 UTC"  # a site the backend did not list: UTC, and says so
    assert book.time(at) == "15:05:09 CET"  # a time of no site: the viewer's own site's zone
    assert site_book([], None).time(datetime(2026, 7, 1, 9, 0, tzinfo=UTC)) == "09:00:00 UTC"
    assert book.time(None, "north") == "–"


def test_alerts_and_command_attempts_show_the_site_s_zone_with_the_date_where_it_may_be_days_back():
    book = site_book([{"site": "east", "time_zone": "Asia/Kathmandu", "wait_target_s": 900}], ("east",))
    at = "2026-12-04T20:05:09+00:00"  # already the next day in Kathmandu
    alert = {"summary": "Queue is down", "site": "east", "raised_at": at, "status": "acknowledged",
             "acked_by": "sre-1"}
    assert banner_text(alert, book) == "⚠ Queue is down (since 01:50 +0545; acknowledged by sre-1)"
    assert book.moment(at, "east") == "2026-12-05 01:50:09 +0545"
    command = {"attempt_history": [{"attempt": 1, "sent_at": at, "answer": "unavailable", "error": "timeout"},
                                   {"attempt": 2, "sent_at": "2026-12-04T20:06:00+00:00", "answer": "ok",
                                    "error": None}]}
    assert attempts_text(command, book, "east") == (
        "#1 2026-12-05 01:50:09 +0545 unavailable (timeout); #2 2026-12-05 01:51:00 +0545 ok")


def test_floor_badges_say_priority_eligibility_and_an_appointment_due_within_ten_minutes():
    now = datetime(2026, 12, 4, 14, 0, tzinfo=UTC)
    plain = {"priority": "normal", "eligibility": "passed", "slot_start": None}
    assert badges(plain, now) == []
    assert [text for text, _ in badges({**plain, "priority": "high", "eligibility": "failed",
                                        "slot_start": "2026-12-04T14:09:00+00:00"}, now)] == [
        "priority", "eligibility failed", "appointment due"]
    assert badges({**plain, "slot_start": "2026-12-04T14:11:00+00:00"}, now) == []  # not yet due
    assert [t for t, _ in badges({**plain, "eligibility": "unverified"}, now)] == ["eligibility unverified"]
    assert ((wait_text(59), wait_text(61), wait_text(3600))
            == ("just arrived", "waiting 1 min", "waiting 60 min"))
    assert wait_shown(660, 600) == ("waiting 11 min, over the 10 min target", True)
    assert wait_shown(540, 600) == ("waiting 9 min", False)
    assert wait_shown(540, None) == ("waiting 9 min", False)


def test_floor_fallback_steps_are_those_of_the_system_down_as_far_as_the_backend_offers_them():
    def actions(fallback: dict) -> list[str]:
        return [step.action for step in steps_of(fallback)]

    assert actions({"system": "crm", "steps": ["set_priority"]}) == ["set_priority"]
    assert (actions({"system": "core", "steps": ["mark_unverified", "verify"]})
            == ["mark_unverified", "verify"])
    assert (actions({"system": "appointments", "steps": ["check_in", "book_walk_in"]})
            == ["check_in", "book_walk_in"])
    assert actions({"system": "queue", "steps": ["check_in", "call"]}) == ["check_in", "call"]  # narrowed
    assert actions({"system": "contact_center", "steps": []}) == []
    assert reference_label(steps_of({"system": "crm", "steps": ["set_priority"]})) == "Reference"
    assert reference_label(steps_of({"system": "queue", "steps": ["check_in", "call"]})) == \
        "Reference (empty: the next one or a new walk-in)"


def test_a_snapshot_of_another_replica_leaves_no_topic_to_resume_by_the_old_numbering():
    connection = LiveConnection("http://127.0.0.1:1", "token", topics=("flow", "journeys"))
    for topic, seq in (("flow", 5), ("journeys", 7)):
        connection._handle({"op": "snapshot", "topic": topic, "seq": seq, "epoch": "first", "data": []})
    assert connection._subscribe()["last_seq"] == {"flow": 5, "journeys": 7}
    # reconnected to another replica: its flow snapshot came, the connection dropped before its journeys'
    connection._handle({"op": "snapshot", "topic": "flow", "seq": 1, "epoch": "second", "data": []})
    resume = connection._subscribe()
    assert (resume["epoch"], resume["last_seq"]) == ("second", {"flow": 1})


def test_sign_in_refusals_kept_for_browsers_are_bounded(settings):
    board = Dashboard(settings=dashboard_settings(settings.tokens), backend_url="http://127.0.0.1:1",
                      demo=False)
    for n in range(MAX_REFUSALS + 50):  # a browser without a cookie is a new one at every request
        board.refuse(f"browser-{n}", "refused")
    assert len(board.refusals) == MAX_REFUSALS and "browser-0" not in board.refusals
    assert board.refusals[f"browser-{MAX_REFUSALS + 49}"] == "refused"


async def test_of_reads_asked_one_after_another_only_the_last_asked_shows_whichever_answers_last():
    latest = LatestRead()
    shown: list[str] = []

    async def read(name: str, takes_s: float) -> None:
        still = latest.ask()
        await asyncio.sleep(takes_s)
        if still():
            shown.append(name)

    # the page's first read is slow; a filter pressed meanwhile answers first
    await asyncio.gather(read("first", 0.05), read("filtered", 0.0))
    assert shown == ["filtered"]


def test_an_alert_of_every_site_is_acknowledged_only_by_someone_of_every_site():
    """As the backend decides: a manager of one site sees a system-down alert but may not answer for
    every site."""
    def principal(roles: list[str], sites: list[str] | str) -> Principal:
        return Principal.from_token(jwt.encode({"sub": "x", "roles": roles, "sites": sites}, "k" * 32))

    everywhere, north = {"site": None}, {"site": "north"}
    one_site, all_sites = principal(["manager"], ["north"]), principal(["sre"], "*")
    assert ack_refusal(everywhere, one_site, offered=True) == EVERY_SITE_ACK
    assert ack_refusal(north, one_site, offered=True) is None
    assert ack_refusal(everywhere, all_sites, offered=True) is None
    floor = principal(["floor_staff"], "*")
    assert ack_refusal(north, floor, offered=True) == "only a manager or an SRE acknowledges an alert"
    assert ack_refusal(north, all_sites, offered=False) == "only a manager or an SRE acknowledges an alert"


def test_actions_on_a_sites_items_need_the_role_at_that_site_not_anywhere():
    """As the backend decides (acting_as): an SRE of north who is floor staff at south sees south's
    failures and alerts (a role there) but may neither retry nor acknowledge them."""
    claims_map = parse_claims_map("""
claims = ["groups"]
[groups.north-sre]
roles = ["sre"]
sites = ["north"]
[groups.south-floor]
roles = ["floor_staff"]
sites = ["south"]
""")
    token = jwt.encode({"sub": "x", "groups": ["north-sre", "south-floor"]}, "k" * 32)
    split = Principal.from_token(token, claims_map)
    assert site_block({"site": "north"}, split) is None
    assert site_block({"site": "south"}, split) == "needs the sre role at south"
    assert site_block({"site": None}, split) == "needs the sre role at every site"
    assert ack_refusal({"site": "north"}, split, offered=True) is None
    assert ack_refusal({"site": "south"}, split, offered=True) == (
        "only a manager or an SRE of south acknowledges its alerts")
    assert resend_offered({"site": "north", "resendable": True}, split)
    assert not resend_offered({"site": "south", "resendable": True}, split)
    assert not resend_offered({"site": "north", "resendable": False}, split)
