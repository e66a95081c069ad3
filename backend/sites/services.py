"""Reading sites and their floor: who is at a site now, in the order the queue serves them."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import msgspec

from backend.auth import Principal
from backend.fallbacks import services as fallbacks
from backend.journeys.merge import JourneyState
from backend.sites.config import SiteDirectory, SiteSettings
from backend.sites.schemas import Booking, BookingPage, CounterState, Floor, FloorCustomer, Site

_state = msgspec.json.Decoder(JourneyState)
# more than any floor holds; a bound, so that one request never reads without end
FLOOR_LIMIT = 1000
_AT_COUNTER = {"in_service": 0, "called": 1}


def site_view(settings: SiteSettings) -> Site:
    return Site(site=settings.site, time_zone=settings.time_zone, wait_target_s=settings.wait_target_s,
                service_targets_s=dict(settings.service_targets_s), counters=list(settings.counters))


async def _sites_with_journeys(conn: asyncpg.Connection) -> list[str]:
    """Every distinct site, one index probe per site (a skip scan): linear in the sites, not the journeys."""
    rows = await conn.fetch(
        "WITH RECURSIVE s(site) AS (SELECT min(site) FROM journeys UNION ALL"
        " SELECT (SELECT min(site) FROM journeys WHERE site > s.site) FROM s WHERE s.site IS NOT NULL)"
        " SELECT site FROM s WHERE site IS NOT NULL")
    return [r["site"] for r in rows]


async def list_sites(conn: asyncpg.Connection, principal: Principal, directory: SiteDirectory) -> list[Site]:
    names = sorted(principal.sites) if principal.sites is not None else sorted(
        {*directory.configured, *await _sites_with_journeys(conn)})
    return [site_view(directory.get(name)) for name in names]


async def floor(conn: asyncpg.Connection, settings: SiteSettings) -> Floor:
    rows = await conn.fetch(
        """
        SELECT j.id, j.stage, j.state, j.arrived_at, j.called_at,
               extract(epoch FROM coalesce(j.called_at, now())
                                   - coalesce(j.arrived_at, j.waiting_at, j.created_at)) AS wait_s,
               array(SELECT r.ref FROM journey_refs r WHERE r.journey_id = j.id ORDER BY r.ref) AS refs
        FROM journeys j WHERE j.site = $1 AND j.stage IN ('arrived', 'waiting', 'called', 'in_service')
        ORDER BY CASE j.stage WHEN 'in_service' THEN 0 WHEN 'called' THEN 1 ELSE 2 END,
                 (j.state -> 'priority' ->> 1 = 'high') DESC NULLS LAST,
                 (j.state -> 'slot_start' ->> 1)::timestamptz NULLS LAST,
                 coalesce(j.arrived_at, j.waiting_at, j.created_at), j.id
        LIMIT $2
        """, settings.site, FLOOR_LIMIT)
    customers, position = [], 0
    for row in rows:
        state = _state.decode(row["state"])
        ticket, slot, service = state.value("ticket") or {}, state.value("slot_start"), state.value("service")
        waiting = row["stage"] not in _AT_COUNTER
        position += waiting
        customers.append(FloorCustomer(
            journey_id=row["id"], refs=list(row["refs"]), stage=row["stage"],
            position=position if waiting else None,
            ticket=ticket.get("ticket"), queue_name=ticket.get("queue_name"), service=service,
            counter=state.value("counter"), priority=state.value("priority") or "normal",
            eligibility=(state.value("eligibility") or {}).get("result"),
            slot_start=datetime.fromisoformat(slot) if slot else None, arrived_at=row["arrived_at"],
            called_at=row["called_at"], wait_s=max(0.0, float(row["wait_s"])),
            wait_target_s=settings.target_for(service or ticket.get("queue_name"))))
    return Floor(site=site_view(settings), at=datetime.now(UTC), customers=customers,
                 counters=_counters(settings, customers),
                 fallbacks=await fallbacks.list_fallbacks(conn, sites=[settings.site], status="active",
                                                          limit=50, cursor=None))


async def bookings_today(conn: asyncpg.Connection, settings: SiteSettings, now: datetime) -> BookingPage:
    """Today's appointments at the site not yet checked in, by slot: what Switchboard last heard from the
    appointments system (its events, and reconciliation against its snapshots), so that a check-in
    during its fallback names a booking that exists. Read through the (site, stage) index: linear in the
    site's open bookings, not its history."""
    day = settings.day_of(now)
    start, end = settings.day_bounds(day)
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT j.id, j.state -> 'service' ->> 1 AS service,
                   (j.state -> 'slot_start' ->> 1)::timestamptz AS slot,
                   (SELECT min(r.ref) FROM journey_refs r
                    WHERE r.journey_id = j.id AND r.ref LIKE 'appointments:%') AS ref
            FROM journeys j WHERE j.site = $1 AND j.stage = 'booked') b
        WHERE slot >= $2 AND slot < $3
        ORDER BY slot, id LIMIT $4
        """, settings.site, start, end, FLOOR_LIMIT)
    return BookingPage(site=settings.site, day=day, items=[
        Booking(journey_id=row["id"], ref=row["ref"], service=row["service"], slot_start=row["slot"])
        for row in rows if row["ref"] is not None])


def _counters(settings: SiteSettings, customers: list[FloorCustomer]) -> list[CounterState]:
    """The configured counters in their order, then any other a customer is at."""
    at: dict[str, FloorCustomer] = {}
    for customer in customers:  # in service before called: the one being served holds the counter
        if customer.stage in _AT_COUNTER and customer.counter:
            at.setdefault(customer.counter, customer)
    names = [*settings.counters, *sorted(set(at) - set(settings.counters))]
    return [CounterState(counter=name, journey_id=at[name].journey_id if name in at else None,
                         ticket=at[name].ticket if name in at else None,
                         stage=at[name].stage if name in at else None)  # type: ignore[arg-type]
            for name in names]
