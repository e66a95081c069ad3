"""CONTRACT section 2: the same set of events gives the same journey whatever the order of arrival,
however often each arrives, and however the deliveries are split across two concurrent consumers.
Checked against real Postgres with the apply path the backend runs, events of five systems naming sites
freely (a booking at one site, a walk-in or ticket at another, a reschedule by a system that did not book,
links that join journeys across sites), some published for their site alone (by a connector limited to
sites): two different arrival orders give the same stored state, site and owner included, the reference's
journey, and no failure at all. The merge itself is checked in memory below.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.ingest.consumer import ApplyWorker
from backend.ingest.validate import Accepted
from backend.journeys import services
from backend.journeys.merge import JourneyState, copy, fold, merge
from backend.live.bus import LiveBus
from backend.routing.rules import DEFAULT_RULES, load_rules
from switchboard.events import RESERVED_SYSTEMS, SEED_SYSTEMS, Event
from tests.support.events import cloud_event
from tools.reference_merge import expected_journey, observed

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
SOURCES = {system: f"/{system}" for system in ("appointments", "contact_center", "queue", "crm", "core")}
SUBJECT_SYSTEM = {"contact_center": "appointments"}  # it books and reschedules for the appointment system
SITES = ["north", "south", "east"]

# (type, owning system, data beyond site) — a small alphabet that exercises every merge rule
STEPS: list[tuple[str, str, dict[str, Any]]] = [
    ("appointment.booked", "appointments", {"service": "passport", "channel": "phone",
                                            "slot_start": "2026-03-02T11:00:00+00:00"}),
    ("appointment.booked", "appointments", {"service": "licence", "channel": "web",
                                            "slot_start": "2026-03-02T12:00:00+00:00"}),
    ("appointment.booked", "contact_center", {"service": "permit", "channel": "phone",
                                              "slot_start": "2026-03-02T10:00:00+00:00"}),
    ("appointment.rescheduled", "appointments", {"slot_start": "2026-03-02T15:30:00+00:00"}),
    ("appointment.rescheduled", "contact_center", {"slot_start": "2026-03-02T16:00:00+00:00"}),
    ("appointment.cancelled", "appointments", {"reason_code": "CUSTOMER"}),
    ("appointment.no_show", "appointments", {}),
    ("eligibility.checked", "core", {"result": "failed", "reason_code": "DOCS"}),
    ("eligibility.checked", "core", {"result": "passed"}),
    ("customer.priority_changed", "crm", {"priority": "high"}),
    ("customer.priority_changed", "crm", {"priority": "normal"}),
    ("customer.arrived", "queue", {}),
    ("ticket.issued", "queue", {"ticket": "T-1", "queue_name": "main"}),
    ("ticket.called", "queue", {"counter": "C1"}),
    ("service.started", "queue", {"counter": "C2"}),
    ("service.completed", "queue", {"outcome": "DONE"}),
]


@st.composite
def journeys(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Events over 1-3 groups of references; links inside a group (and sometimes across) join them."""
    tag = "TAG"  # replaced per run: hypothesis replays examples against the same database
    groups = [[f"{system}:{tag}-{g}" for system in ("appointments", "queue", "crm", "core")]
              for g in range(draw(st.integers(1, 3)))]
    events = []
    for n in range(draw(st.integers(1, 14))):
        type_, system, extra = draw(st.sampled_from(STEPS))
        g = draw(st.integers(0, len(groups) - 1))
        subject_system = SUBJECT_SYSTEM.get(system, system)
        subject = next(r for r in groups[g] if r.startswith(subject_system + ":"))
        links = draw(st.lists(st.sampled_from([r for grp in groups for r in grp]), max_size=2, unique=True))
        events.append({
            "specversion": "1.0", "id": f"{tag}-{n}", "source": SOURCES[system], "type": type_,
            "subject": subject,
            # few distinct times, so ties on time are common and (source, id) must break them
            "time": (T0 + timedelta(minutes=draw(st.integers(0, 5)))).isoformat(),
            "data": {"site": draw(st.sampled_from(SITES)), **extra,
                     "links": [r for r in links if r != subject]},
        })
    return events, groups


def scope_by_number(events: list[dict[str, Any]], flags: list[bool]) -> dict[str, str]:
    """The events `flags` marks as published for their site alone (a connector limited to sites), by the
    number their ids end in (the same under every tag)."""
    return {e["id"].rsplit("-", 1)[1]: e["data"]["site"]
            for e, flag in zip(events, flags, strict=False) if flag}


def scope_of(scopes: dict[str, str]) -> Any:
    return lambda event: scopes.get((event["id"] if isinstance(event, dict) else event.id).rsplit("-", 1)[1])


def components(events: list[dict[str, Any]]) -> list[tuple[set[str], list[dict[str, Any]]]]:
    parent: dict[str, str] = {}

    def find(r: str) -> str:
        while parent.setdefault(r, r) != r:
            r = parent[r]
        return r

    for e in events:
        for link in e["data"]["links"]:
            parent[find(link)] = find(e["subject"])
        find(e["subject"])
    groups: dict[str, tuple[set[str], list[dict[str, Any]]]] = {}
    for e in events:
        refs, evs = groups.setdefault(find(e["subject"]), (set(), []))
        refs.update([e["subject"], *e["data"]["links"]])
        evs.append(e)
    return list(groups.values())


async def apply_in_any_order(pool: Any, events: list[dict[str, Any]], copies: list[int], rng: random.Random,
                             scoped: Any) -> None:
    """Deliver `events` (some several times) shuffled, in random batches split across two concurrent
    consumers, through the backend's apply path; each distinct event applied once, nothing refused."""
    decoded = [msgspec.convert(e, Event) for e in events]
    deliveries = [Accepted(ev, scope=scoped(ev)) for ev, n in zip(decoded, copies, strict=False)
                  for _ in range(n)]
    rng.shuffle(deliveries)
    cut = rng.randint(0, len(deliveries))
    rules = load_rules(DEFAULT_RULES, SEED_SYSTEMS)
    workers = [ApplyWorker(None, pool, bus=LiveBus(None), rules=rules, batch=4, max_bytes=65536,  # type: ignore[arg-type]
                           known_systems=SEED_SYSTEMS | RESERVED_SYSTEMS)
               for _ in range(2)]

    async def consume(worker: ApplyWorker, share: list[Any]) -> int:
        applied = 0
        while share:
            size = rng.randint(1, 4)
            batch, share = share[:size], share[size:]
            outcome, failures = await worker.apply_batch(batch, [])
            assert not failures
            applied += outcome.applied
        return applied

    applied = await asyncio.gather(consume(workers[0], deliveries[:cut]),
                                   consume(workers[1], deliveries[cut:]))
    assert sum(applied) == len(events), "each distinct event is applied exactly once"


def tagged(case: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return msgspec.json.decode(msgspec.json.encode(case).replace(b"TAG", tag.encode()))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=journeys(), copies=st.lists(st.integers(1, 3), min_size=14, max_size=14),
       flags=st.lists(st.booleans(), min_size=14, max_size=14), seed=st.integers(0, 2**32))
async def test_any_order_duplicates_and_two_consumers_give_the_reference_journey(pool, case, copies, flags,
                                                                                 seed):
    rng = random.Random(seed)
    tags = [uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]]
    runs = [tagged(case[0], tag) for tag in tags]
    scoped = scope_of(scope_by_number(case[0], flags))
    for events in runs:  # the same events, each time in another order
        await apply_in_any_order(pool, events, copies, rng, scoped)

    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM failures WHERE event_id LIKE ANY($1::text[])",
                                   [f"{tag}-%" for tag in tags]) == 0, "nothing refused, in either order"
        pairs = zip(components(runs[0]), components(runs[1]), strict=True)
        for (refs, _), (other_refs, group_events) in pairs:
            states = []
            for tag, linked in ((tags[0], refs), (tags[1], other_refs)):
                ids = {r["journey_id"] for r in await conn.fetch(
                    "SELECT journey_id FROM journey_refs WHERE ref = ANY($1::text[])", sorted(linked))}
                assert len(ids) == 1, f"one journey per linked set of references, got {len(ids)}"
                journey_id = ids.pop()
                stored = await conn.fetchval("SELECT state::text FROM journeys WHERE id = $1", journey_id)
                states.append(msgspec.json.decode(stored.replace(tag, "TAG")))
            assert states[0] == states[1], "two arrival orders, one state (site, owner and claims included)"
            journey = await services.get_journey(conn, journey_id)  # the second run's
            assert journey is not None
            assert observed(journey) == expected_journey(group_events, scoped)
            assert sorted(journey.refs) == sorted(other_refs)
            assert [t.id for t in journey.timeline] == [e["id"] for e in sorted(
                group_events, key=lambda e: (datetime.fromisoformat(e["time"]), e["source"], e["id"]))]


def _state(events: list[Event], scoped: Any = lambda _: None) -> JourneyState:
    state = JourneyState()
    for event in events:
        state = fold(state, event, scoped(event))
    return state


@settings(max_examples=200, deadline=None)
@given(case=journeys(), flags=st.lists(st.booleans(), min_size=14, max_size=14), seed=st.integers(0, 2**32))
def test_the_site_merge_is_order_free_and_belongs_to_the_system_that_placed_the_journey(case, flags, seed):
    """Sites differing freely, some events published for their site alone: folding in any order, or merging
    any split, gives one state, whose site is the latest one said by the authority of the earliest event and
    whose stage and counter count no event published for another site (tools/reference_merge.py)."""
    events, _ = case
    scoped = scope_of(scope_by_number(events, flags))
    decoded = [msgspec.convert(e, Event) for e in events]
    rng = random.Random(seed)
    in_order = _state(decoded, scoped)
    shuffled = rng.sample(decoded, len(decoded))
    cut = rng.randint(0, len(shuffled))
    left, right = _state(shuffled[:cut], scoped), _state(shuffled[cut:], scoped)
    assert merge(left, right) == merge(right, left) == _state(shuffled, scoped) == in_order
    stored = msgspec.json.encode(left)
    continued = copy(left)  # as the apply continues a stored journey
    for event in shuffled[cut:]:
        continued = fold(continued, event, scoped(event))
    assert continued == in_order and msgspec.json.encode(left) == stored, "the stored state is left as it was"
    assert merge(in_order, copy(in_order)) == in_order, "idempotent"
    assert msgspec.json.decode(msgspec.json.encode(in_order), type=JourneyState) == in_order, "stored as is"
    expected = expected_journey(events, scoped)
    assert (in_order.value("site"), in_order.value("stage") or "open", in_order.value("counter")) == (
        expected["site"], expected["stage"], expected["counter"])


@settings(max_examples=200, deadline=None)
@given(case=journeys(), foreign=st.lists(st.sampled_from(STEPS), min_size=1, max_size=4),
       seed=st.integers(0, 2**32))
def test_no_later_event_of_another_system_moves_a_journey_whatever_its_site_or_links(case, foreign, seed):
    """The security side of the rule: a system that did not place a journey says any site, links anything of
    the journey, in any order among its events; the site stays the owner's and the owner stays."""
    events, groups = case
    decoded = [msgspec.convert(e, Event) for e in events]
    owner_state = _state(decoded)
    owner = owner_state.value("placed_by")
    earliest = min(datetime.fromisoformat(e["time"]) for e in events)
    rng = random.Random(seed)
    claims = []
    for n, (type_, system, extra) in enumerate(foreign):
        if system == owner or SUBJECT_SYSTEM.get(system) == owner:
            continue
        subject = f"{SUBJECT_SYSTEM.get(system, system)}:TAG-x{n}"
        claims.append(msgspec.convert({
            "specversion": "1.0", "id": f"TAG-x{n}", "source": SOURCES[system], "type": type_,
            "subject": subject, "time": (earliest + timedelta(seconds=rng.randint(1, 600))).isoformat(),
            "data": {"site": f"elsewhere-{n}", **extra, "links": [r for grp in groups for r in grp][:3]},
        }, Event))
    attacked = _state(rng.sample(decoded + claims, len(decoded) + len(claims)))
    assert (attacked.value("site"), attacked.value("placed_by")) == (owner_state.value("site"), owner)


def test_a_stage_keeps_its_earliest_moment_whatever_zones_it_was_reported_in():
    """Found in review: stage times were compared as text with their own offsets, so 10:05+01:00 (09:05 UTC)
    lost to 09:20+00:00 and the journey arrived 15 minutes late."""
    paris = timezone(timedelta(hours=1))
    queue = msgspec.convert(cloud_event("customer.arrived", "queue:T-1", {"site": "north"},
                                        time=datetime(2026, 1, 5, 10, 5, tzinfo=paris)), Event)
    desk = msgspec.convert(cloud_event("customer.arrived", "queue:T-1", {"site": "north"},
                                       time=datetime(2026, 1, 5, 9, 20, tzinfo=UTC)), Event)
    for first, then in ((queue, desk), (desk, queue)):
        state = fold(fold(JourneyState(), first), then)
        assert state.reached["arrived"] == "2026-01-05T09:05:00+00:00"
    # a state stored before times were kept in UTC
    stored = JourneyState(reached={"arrived": "2026-01-05T10:05:00+01:00"})
    assert fold(stored, desk).reached["arrived"] == "2026-01-05T10:05:00+01:00"
