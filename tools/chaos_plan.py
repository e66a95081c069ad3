"""What `switchboard chaos` publishes and what it must find afterwards.

Journeys are built the way branches see them: bookings (web, phone, branch) that are rescheduled,
checked for eligibility (sometimes failed), flagged high priority and back, cancelled, missed or
served; walk-ins that start at the queue; and references of four systems that only links join
into one journey. Journeys are spread over twelve sites, and many name several: a customer booked at
one branch walks into another, the appointment system reschedules a booking the contact centre made
(or its own) to another branch, the CRM names the customer's usual branch, and an arrival may make a
journey of its own at its branch before a ticket's link joins it to the booking's. Whatever the order,
the journey sits where the system of its earliest event last said (docs/contract-notes.md), and
nothing is refused. The messages then arrive out of order across the whole run (large spans shuffled,
stragglers held back to the very end), some twice. Every event is valid: dated in the past, each
system naming its own references (the contact centre those of the appointment system it acts for),
no id with a long digit run.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from tools.reference_merge import FINAL, STAGE_OF

SITES = 12
SPAN = 5000  # messages shuffled together: an event may overtake thousands of others
STRAGGLERS = 0.02  # share of messages held back to the end of the run
ELSEWHERE = 0.3  # share of visits (and of reschedules) at another branch than the one booked
_LONG_DIGIT_RUN = re.compile(r"\d{9,}")  # what personal-data checks take for a phone or account number


@dataclass
class PlannedJourney:
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def refs(self) -> set[str]:
        linked = {r for e in self.events for r in e["data"].get("links", [])}
        return {e["subject"] for e in self.events} | linked

    def count(self, type_: str, **data: object) -> int:
        return sum(e["type"] == type_ and all(e["data"].get(k) == v for k, v in data.items())
                   for e in self.events)

    @property
    def finished(self) -> bool:
        return any(STAGE_OF.get(e["type"]) in FINAL for e in self.events)

    def command_bounds(self) -> dict[str, tuple[int, int]]:
        """(least, most) commands of each kind the v1 rules may write for this journey, whatever the arrival
        order.

        `journey.summary` and `visit.context` do not depend on the order; the others fire only when their
        cause arrives after the state it needs, so only their upper bound is certain (zero when the cause
        or the state never occurs).
        """
        failed = self.count("eligibility.checked", result="failed")
        return {
            "journey.summary": (int(self.finished),) * 2,
            "visit.context": (self.count("appointment.booked", channel="phone"),) * 2,
            "visit.hold": (0, failed),
            "staff.alert": (0, self.count("customer.arrived") if failed else 0),
            "ticket.prioritize": (0, self.count("customer.priority_changed", priority="high")),
        }


@dataclass
class Plan:
    messages: list[tuple[str, bytes, str]]  # (subject, body, Nats-Msg-Id) in publishing order
    journeys: list[PlannedJourney]
    events: int  # distinct events


def event_id(rng: random.Random) -> str:
    while True:
        candidate = str(uuid.UUID(int=rng.getrandbits(128)))
        if not _LONG_DIGIT_RUN.search(candidate):
            return candidate


class _Builder:
    def __init__(self, rng: random.Random, now: datetime) -> None:
        self.rng, self.now = rng, now
        self.events: list[dict[str, Any]] = []
        self.journeys: list[PlannedJourney] = []

    def add(self, journey: PlannedJourney | None, system: str, type_: str, subject: str, at: datetime,
            data: dict[str, Any]) -> None:
        event = {"specversion": "1.0", "id": event_id(self.rng), "source": f"/{system}", "type": type_,
                 "subject": subject, "time": at.isoformat(), "data": data}
        self.events.append(event)
        if journey is not None:
            journey.events.append(event)

    def other_site(self, than: str) -> str:
        return f"site-{(int(than[5:]) + self.rng.randrange(1, SITES)) % SITES:02d}"

    def journey(self, n: int) -> None:
        rng, journey = self.rng, PlannedJourney()
        self.journeys.append(journey)
        booked_at = self.now - timedelta(hours=40) + timedelta(seconds=rng.uniform(0, 30 * 3600))
        home = f"site-{rng.randrange(SITES):02d}"
        # the branch the customer walks into: sometimes not the one booked
        visit = self.other_site(home) if rng.random() < ELSEWHERE else home
        appt, ticket, check, customer = f"appointments:A-{n:05d}", f"queue:T-{n:05d}", f"core:E-{n:05d}", \
            f"crm:C-{n:05d}"
        walk_in = rng.random() < 0.25
        anchor = ticket if walk_in else appt
        if not walk_in:
            channel = rng.choice(["web", "phone", "branch"])
            slot = booked_at + timedelta(hours=2)
            booker = "contact_center" if channel == "phone" and rng.random() < 0.5 else "appointments"
            self.add(journey, booker, "appointment.booked", appt, booked_at,
                     {"site": home, "service": rng.choice(["passport", "licence", "permit"]),
                      "channel": channel,
                      "slot_start": slot.isoformat()})
            appt_site = home  # where the appointment system has the booking, as its later events say
            if rng.random() < 0.3:
                # by the booker (which owns the site) or by the appointment system for a contact-centre
                # booking (whose word on the site is kept but moves nothing), sometimes to another branch
                rescheduler = rng.choice([booker, "appointments"])
                moved_to = self.other_site(home) if rng.random() < ELSEWHERE else home
                if rescheduler == "appointments":
                    appt_site = moved_to
                slot += timedelta(minutes=30)
                self.add(journey, rescheduler, "appointment.rescheduled", appt,
                         booked_at + timedelta(minutes=5), {"site": moved_to, "slot_start": slot.isoformat()})
            if rng.random() < 0.35:
                result = "failed" if rng.random() < 0.4 else "passed"
                self.add(journey, "core", "eligibility.checked", check, booked_at + timedelta(minutes=10),
                         {"site": home, "links": [appt], "result": result, "reason_code": result.upper()})
            ending = rng.choices(["served", "cancelled", "no_show", "open"], [0.6, 0.15, 0.1, 0.15])[0]
            if ending == "cancelled":
                self.add(journey, "appointments", "appointment.cancelled", appt,
                         booked_at + timedelta(minutes=40), {"site": appt_site, "reason_code": "CUSTOMER"})
            elif ending == "no_show":
                self.add(journey, "appointments", "appointment.no_show", appt, slot + timedelta(minutes=20),
                         {"site": appt_site})
            if ending != "served":
                self._priority(journey, customer, anchor, rng.choice([home, visit]),
                               booked_at + timedelta(minutes=15), late=False)
                return
        arrived_at = booked_at + timedelta(minutes=100)
        # the booking is linked when the customer arrives, or only when the ticket is issued: then the
        # arrival makes a journey of its own at the branch, which the ticket's link joins to the booking's
        link_on_arrival = walk_in or rng.random() < 0.7
        self.add(journey, "queue", "customer.arrived", ticket, arrived_at,
                 {"site": visit, **({"links": [appt]} if not walk_in and link_on_arrival else {})})
        steps = rng.choices([2, 5], [0.2, 0.8])[0]  # some are still waiting when the run ends
        self.add(journey, "queue", "ticket.issued", ticket, arrived_at + timedelta(minutes=1),
                 {"site": visit, "ticket": f"T-{n:05d}", "queue_name": "main",
                  **({} if link_on_arrival else {"links": [appt]})})
        self._priority(journey, customer, ticket, rng.choice([home, visit]),
                       arrived_at + timedelta(minutes=3), late=True)
        counter = f"C{rng.randint(1, 6)}"
        if steps == 5:
            self.add(journey, "queue", "ticket.called", ticket, arrived_at + timedelta(minutes=10),
                     {"site": visit, "counter": counter})
            self.add(journey, "queue", "service.started", ticket, arrived_at + timedelta(minutes=11),
                     {"site": visit, "counter": counter})
            self.add(journey, "queue", "service.completed", ticket, arrived_at + timedelta(minutes=20),
                     {"site": visit, "outcome": "DONE"})

    def _priority(self, journey: PlannedJourney, customer: str, ref: str, site: str, at: datetime, *,
                  late: bool) -> None:
        """The CRM flags a customer high priority (linking its own reference in), and sometimes takes it
        back."""
        if self.rng.random() >= 0.3:
            return
        self.add(journey, "crm", "customer.priority_changed", customer, at,
                 {"site": site, "links": [ref], "priority": "high", "reason_code": "ASSISTANCE"})
        if self.rng.random() < 0.4:
            self.add(journey, "crm", "customer.priority_changed", customer,
                     at + timedelta(minutes=2 if late else 30),
                     {"site": site, "priority": "normal", "reason_code": "RESOLVED"})

    def capacity(self) -> None:
        site = f"site-{self.rng.randrange(SITES):02d}"
        self.add(None, "queue", "capacity.changed", f"site:{site}",
                 self.now - timedelta(hours=self.rng.uniform(1, 40)),
                 {"site": site, "counters_open": 6, "counters_busy": self.rng.randint(0, 6),
                  "staff_on_duty": 7,
                  "queue_length": self.rng.randint(0, 30)})


def _reorder(messages: list[tuple[str, bytes, str]], rng: random.Random) -> list[tuple[str, bytes, str]]:
    late = [m for m in messages if rng.random() < STRAGGLERS]
    held = {id(m) for m in late}
    rest = [m for m in messages if id(m) not in held]
    for start in range(0, len(rest), SPAN):
        span = rest[start:start + SPAN]
        rng.shuffle(span)
        rest[start:start + SPAN] = span
    return rest + late


def make_plan(total: int, seed: int, now: datetime | None = None) -> Plan:
    """`total` distinct events as messages, with resends, in an order far from the events' own."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible plan, not a secret
    builder = _Builder(rng, (now or datetime.now(UTC)).replace(microsecond=0))
    n = 0
    while len(builder.events) < total:
        n += 1
        builder.journey(n)
        if n % 25 == 0:
            builder.capacity()
    kept = {id(e) for e in builder.events[:total]}  # the last journey may be cut short: it is still a journey
    for journey in builder.journeys:
        journey.events = [e for e in journey.events if id(e) in kept]
    messages = []
    for event in builder.events[:total]:
        system = event["source"][1:]
        message = (f"svc.events.{system}.{event['type']}", msgspec.json.encode(event),
                   f"/{system} {event['id']}")
        messages.append(message)
        roll = rng.random()
        if roll < 0.05:
            messages.append(message)  # a resend JetStream's duplicate window catches
        elif roll < 0.10:
            # one only Postgres can recognise
            messages.append((message[0], message[1], f"{message[2]} resent"))
    return Plan(messages=_reorder(messages, rng), journeys=[j for j in builder.journeys if j.events],
                events=total)

