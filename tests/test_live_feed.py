"""The live feed (backend/live/feed.py) on a real NATS bus: what it publishes of the batches handed to it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from nats.aio.msg import Msg

from backend.ingest.apply import Outcome
from backend.journeys.merge import JourneyState
from backend.journeys.schemas import JourneyMerged
from backend.journeys.views import journey_view
from backend.live.bus import SUBJECT_PREFIX, LiveBus
from backend.live.feed import SITE_INTERVAL_S, SITE_SHARE, JourneyFeed, pause_after
from backend.live.schemas import BusUpdate
from tests.support.backends import nats_connect
from tests.support.waits import eventually


def _journey(site: str, stage: str, ref: str):
    now = datetime.now(UTC)
    return journey_view(JourneyState(), id=uuid.uuid4(), site=site, stage=stage, refs=[ref], created_at=now,
                        updated_at=now)


async def test_batches_handed_over_together_publish_each_journey_once_as_last_left_and_a_merged_one_as_gone(
    pool, settings, uid
):
    site = f"feed-{uid}"
    absorbed, survivor = _journey(site, "booked", f"appointments:A-{uid}"), _journey(site, "waiting",
                                                                                    f"queue:T-{uid}")
    called = msgspec.structs.replace(survivor, stage="called")
    nc = await nats_connect(settings)
    published: list[tuple[str, str]] = []  # (key, stage or where it went)

    async def heard(msg: Msg) -> None:
        update = msgspec.json.decode(msg.data, type=BusUpdate)
        data = msgspec.json.decode(update.data)
        published.append((update.key, data.get("stage") or f"into {data['merged_into']}"))

    subscription = await nc.subscribe(SUBJECT_PREFIX + "journeys", cb=heard)
    feed = JourneyFeed(pool, LiveBus(nc), "{}")
    # three batches committed before the feed's next round: the link in the second joined the first's
    # journey to another, the third moved that one on
    await feed.on_applied(Outcome(applied=1, journeys=[absorbed]))
    gone = JourneyMerged(id=absorbed.id, site=site, merged_into=survivor.id)
    await feed.on_applied(Outcome(applied=1, journeys=[survivor], merged_away=[gone]))
    await feed.on_applied(Outcome(applied=1, journeys=[called]))
    running = asyncio.create_task(feed.run())
    sentinel = _journey(site, "waiting", f"queue:S-{uid}")
    try:
        async def published_about(key: object) -> bool:
            return any(k == str(key) for k, _ in published)

        await eventually(lambda: published_about(survivor.id))
        # a batch after them: once it is heard, a second copy of theirs would have been too
        await feed.on_applied(Outcome(applied=1, journeys=[sentinel]))
        await eventually(lambda: published_about(sentinel.id))
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await subscription.unsubscribe()
        await nc.close()
    # the absorbed journey's update not yet sent is replaced by its end, never sent as it was
    assert published == [(str(absorbed.id), f"into {survivor.id}"), (str(survivor.id), "called"),
                         (str(sentinel.id), "waiting")]


def test_flow_rounds_take_at_most_their_share_of_the_time_however_long_a_round_takes():
    assert pause_after(0.02) == SITE_INTERVAL_S  # a small day: flow once a second, as before
    for took in (0.06, 0.3, 2.0):  # a round that grew with the day's journeys waits longer after it
        assert took / (took + pause_after(took)) == pytest.approx(SITE_SHARE)
