"""Live updates from applied batches: changed journeys at once, flow and capacity per changed site,
announced on the backend's `LiveBus` (the batch is committed before the worker hands it over).

The apply worker only hands the outcome over (no I/O on its path). A changed journey is published as the
batch that changed it wrote it, never read back; when batches come faster than they are published, each
journey goes out once, as the last of them left it. A journey a link joined into another goes out as a
`JourneyMerged` under its own id, so that clients drop it (and any update of it not yet sent is replaced).
Flow is an aggregate over a site's journeys, so it is recomputed per site at most once per
`SITE_INTERVAL_S`, never per event, and never for more than `SITE_SHARE` of the time: it reads each changed
site's journeys of the day, so a round costs more as the day fills (300 ms for 50 sites and 180,000 journeys
on a 2-core machine, docs/performance.md), and the pause after a round grows with what the round took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from uuid import UUID

import asyncpg
from opentelemetry.trace import SpanKind

from backend.ingest.apply import Outcome
from backend.journeys.schemas import Journey, JourneyMerged
from backend.live.bus import LiveBus
from backend.operations.services import capacity, flow
from switchboard import tracing

log = logging.getLogger(__name__)

SITE_INTERVAL_S = 1.0
SITE_SHARE = 0.05
_RETRY_S = 1.0


def pause_after(took_s: float, interval_s: float = SITE_INTERVAL_S) -> float:
    """The pause after a flow round that took `took_s`: the interval, or longer, so that rounds take at most
    `SITE_SHARE` of the time."""
    return max(interval_s, took_s * (1 / SITE_SHARE - 1))


class JourneyFeed:
    def __init__(self, pool: asyncpg.Pool, bus: LiveBus, targets: str, *,
                 site_interval_s: float = SITE_INTERVAL_S) -> None:
        self.pool = pool
        self.targets = targets  # the sites' wait targets, for flow's share served within target
        self.bus = bus
        self.site_interval_s = site_interval_s
        self._journeys: dict[UUID, Journey | JourneyMerged] = {}
        self._traces: dict[UUID, str] = {}  # journey → the trace of the apply that changed it
        self._sites: set[str] = set()
        self._journeys_changed = asyncio.Event()
        self._sites_changed = asyncio.Event()

    async def on_applied(self, outcome: Outcome) -> None:
        """ApplyWorker's hook, called after each committed batch."""
        if outcome.journeys or outcome.merged_away:
            self._journeys.update((gone.id, gone) for gone in outcome.merged_away)
            self._journeys.update((journey.id, journey) for journey in outcome.journeys)
            self._traces.update(outcome.traces)
            self._journeys_changed.set()
        if outcome.sites:
            self._sites.update(outcome.sites)
            self._sites_changed.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._publish_journeys(), name="live-journeys")
            group.create_task(self._publish_sites(), name="live-sites")

    async def _publish_journeys(self) -> None:
        while True:
            await self._journeys_changed.wait()
            self._journeys_changed.clear()
            journeys, self._journeys = self._journeys, {}
            traces, self._traces = self._traces, {}
            try:
                for journey in journeys.values():
                    traceparent = traces.get(journey.id)
                    if traceparent is None:
                        await self.bus.publish("journeys", journey.site, journey.id, journey)
                        continue
                    with tracing.span("live journeys", traceparent, SpanKind.PRODUCER) as span:
                        await self.bus.publish("journeys", journey.site, journey.id, journey,
                                               tracing.traceparent_of(span))
            except Exception:  # the feed outlives any one failure: NATS away, an unencodable journey
                log.exception("live journeys not published; retrying")
                self._journeys = journeys | self._journeys  # what changed meanwhile is newer
                self._traces = traces | self._traces
                self._journeys_changed.set()
                await asyncio.sleep(_RETRY_S)

    async def _publish_sites(self) -> None:
        while True:
            await self._sites_changed.wait()
            self._sites_changed.clear()
            sites, self._sites = sorted(self._sites), set()
            started = time.monotonic()
            try:
                async with self.pool.acquire() as conn:
                    flows = await flow(conn, sites, self.targets)
                    capacities = await capacity(conn, sites)
                for site_flow in flows:
                    await self.bus.publish("flow", site_flow.site, site_flow.site, site_flow)
                for site_capacity in capacities:
                    await self.bus.publish("capacity", site_capacity.site, site_capacity.site, site_capacity)
            except Exception:  # as above: never let the feed die
                log.exception("live flow and capacity not published; retrying")
                self._sites.update(sites)
                self._sites_changed.set()
            # whatever changes meanwhile is gathered and computed once, in the next round
            await asyncio.sleep(pause_after(time.monotonic() - started, self.site_interval_s))
