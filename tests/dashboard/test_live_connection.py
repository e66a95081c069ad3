"""The dashboard's live connection against a real backend: it says it is live only once it is caught up,
and nothing that breaks while it applies a frame stops it for good."""

from __future__ import annotations

import asyncio

from dashboard.live import CONNECTION, LiveConnection
from tests.support.waits import eventually


async def test_the_connection_is_live_only_once_every_snapshot_is_in(backend, token):
    connection = LiveConnection(backend.url, token("manager"))
    went_live: list[bool] = []

    def on_connection() -> None:
        if connection.state.connected:
            went_live.append(True)

    connection.listen(CONNECTION, on_connection)
    snapshots: set[str] = set()
    for topic in connection.topics:

        def on_snapshot(topic: str = topic) -> None:
            if not connection.state.connected:
                snapshots.add(topic)

        connection.listen(topic, on_snapshot)
    connection.start()
    try:
        await eventually(lambda: _true(connection.state.connected))
    finally:
        await connection.stop()
    # before the banner went, a snapshot of every topic had been applied (the pong follows them)
    assert snapshots == set(connection.topics)
    assert went_live == [True]


async def test_a_frame_that_breaks_its_listener_is_a_reconnect_not_a_silent_stop(backend, token):
    connection = LiveConnection(backend.url, token("manager"), topics=("flow",))
    broke: list[bool] = []

    def breaks_once() -> None:
        if not broke:
            broke.append(True)
            raise KeyError("a field this version does not know")

    connection.listen("flow", breaks_once)
    changes: list[bool] = []
    connection.listen(CONNECTION, lambda: changes.append(connection.state.connected))
    connection.start()
    try:
        # the first snapshot breaks the listener: the connection is lost and goes again, and is live; before,
        # its task ended unseen with the page shown as live
        await eventually(lambda: _true(changes[:2] == [False, True] and connection.state.connected))
    finally:
        await connection.stop()


async def _true(value: bool) -> bool:
    await asyncio.sleep(0)
    return value
