"""The live websocket (CONTRACT section 7) as the dashboard holds it: one connection per signed-in
token, shared by every tab of that user, reconnecting with backoff and resuming with `last_seq`.

It keeps the latest item per key of each topic and tells listeners which topic changed; widgets
re-read the state when they render (see `coalesce`), so updates are never queued per tab.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import connect

from switchboard.waits import stop_tasks

log = logging.getLogger(__name__)

TOPICS = ("flow", "capacity", "journeys", "failures", "reconciliation", "fallbacks", "integrations", "alerts")
CONNECTION = "connection"  # the pseudo-topic listeners use to hear about the connection itself
_KEY_FIELD = {"flow": "site", "capacity": "site", "journeys": "id", "failures": "id", "reconciliation": "key",
              "fallbacks": "id", "integrations": "system", "alerts": "id"}
# journeys and failures keep arriving for hours; the board shows what is current
MAX_ITEMS_PER_TOPIC = 2000
LATEST_CHANGES = 15
# one point per site every 10 s for an hour: enough for a per-minute chart, cheap to send
HISTORY_STEP_S = 10.0
HISTORY_POINTS = 360
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
# close codes after which reconnecting cannot help: the user must sign in again
_FINAL_CLOSE = {4401: "the token expired: sign in again", 1008: "the backend refused this token"}

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.encode
_PING = '{"op": "ping"}'


@dataclass
class FlowPoint:
    time: datetime
    arrivals_per_min: float
    completions_per_min: float


@dataclass
class IntegrationPoint:
    time: datetime
    events_per_min: float
    invalid_per_min: float
    apply_latency_p99_ms: float | None
    held_commands: int


@dataclass
class LiveState:
    """Everything the pages read. Mutated only by the connection's task, on the event loop."""

    items: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {t: {} for t in TOPICS})
    # per site; shared by every connection of the process, so a user who signs in sees the last hour
    flow_history: dict[str, deque[FlowPoint]] = field(default_factory=dict)
    # per system, from the figures the backend publishes on the integrations topic
    integration_history: dict[str, deque[IntegrationPoint]] = field(default_factory=dict)
    # (seq, journey) newest first: one journey may change several times in a row
    latest_journeys: deque[tuple[int, dict[str, Any]]] = field(
        default_factory=lambda: deque(maxlen=LATEST_CHANGES))
    connected: bool = False
    lost_since: datetime | None = None
    attempts: int = 0
    ended: str | None = None

    def apply(self, topic: str, key: str, item: dict[str, Any]) -> None:
        entries = self.items[topic]
        entries.pop(key, None)  # re-inserted last: the dict's order is the order of change
        entries[key] = item
        if len(entries) > MAX_ITEMS_PER_TOPIC:
            del entries[next(iter(entries))]
        if topic == "flow":
            self._record_flow(item)
        elif topic == "integrations" and "events_per_min" in item:
            self._record_integration(item)

    def forget_journey(self, key: str) -> None:
        """A link joined this journey into another (whose own update comes too): it leaves the board."""
        self.items["journeys"].pop(key, None)
        kept = [(seq, journey) for seq, journey in self.latest_journeys if journey["id"] != key]
        self.latest_journeys.clear()
        self.latest_journeys.extend(kept)

    def _record_flow(self, item: dict[str, Any], now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        points = self.flow_history.setdefault(item["site"], deque(maxlen=HISTORY_POINTS))
        point = FlowPoint(now, item["arrivals_per_min"], item["completions_per_min"])
        if points and (now - points[-1].time).total_seconds() < HISTORY_STEP_S:
            points[-1] = FlowPoint(points[-1].time, point.arrivals_per_min, point.completions_per_min)
        else:
            points.append(point)

    def _record_integration(self, item: dict[str, Any], now: datetime | None = None) -> None:
        points = self.integration_history.setdefault(item["system"], deque(maxlen=HISTORY_POINTS))
        point = IntegrationPoint(now or datetime.now(UTC), item["events_per_min"], item["invalid_per_min"],
                                 item.get("apply_latency_p99_ms"), item["held_commands"])
        if points and (point.time - points[-1].time).total_seconds() < HISTORY_STEP_S:
            points[-1] = IntegrationPoint(points[-1].time, point.events_per_min, point.invalid_per_min,
                                          point.apply_latency_p99_ms, point.held_commands)
        else:
            points.append(point)


def seed_history(history: dict[str, deque[FlowPoint]], site: str, past: list[FlowPoint]) -> None:
    """Put the backend's minute-by-minute past before what this process has recorded live for `site`."""
    kept = history.setdefault(site, deque(maxlen=HISTORY_POINTS))
    older = [p for p in past if not kept or p.time < kept[0].time - timedelta(seconds=HISTORY_STEP_S)]
    if older:
        combined = [*older, *kept][-HISTORY_POINTS:]
        kept.clear()
        kept.extend(combined)


class LiveConnection:
    def __init__(self, backend_url: str, token: str | Callable[[], str], topics: tuple[str, ...] = TOPICS,
                 flow_history: dict[str, deque[FlowPoint]] | None = None,
                 integration_history: dict[str, deque[IntegrationPoint]] | None = None) -> None:
        self.url = backend_url.replace("http", "ws", 1).rstrip("/") + "/api/v1/live"
        # a sign-in whose token is refreshed gives a function answering its current token
        self._token = token if callable(token) else lambda: token
        self.topics = topics
        self.state = LiveState(flow_history={} if flow_history is None else flow_history,
                               integration_history={} if integration_history is None else integration_history)
        self._listeners: dict[str, set[Callable[[], None]]] = {}
        self._seq: dict[str, int] = {}
        self._epoch: str | None = None
        self._task: asyncio.Task[None] | None = None

    def listen(self, topic: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` whenever `topic` changes; returns the function that stops it."""
        self._listeners.setdefault(topic, set()).add(callback)
        return lambda: self._listeners.get(topic, set()).discard(callback)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="dashboard-live")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
            self._task = None

    def _notify(self, topic: str) -> None:
        for callback in list(self._listeners.get(topic, ())):
            callback()

    def _set_connected(self, connected: bool) -> None:
        state = self.state
        if connected:
            state.connected, state.lost_since, state.attempts = True, None, 0
        else:
            if state.connected or state.lost_since is None:
                state.lost_since = datetime.now(UTC)
            state.connected = False
        self._notify(CONNECTION)

    async def _run(self) -> None:
        delay = BACKOFF_FIRST_S
        while self.state.ended is None:
            self.state.attempts += 1
            token = self._token()
            try:
                async with connect(self.url, additional_headers={"Authorization": f"Bearer {token}"},
                                   open_timeout=10, max_size=None, compression=None) as socket:
                    # text frames, as the protocol is JSON; the pong comes after the snapshots or the replay
                    # (the server answers in order): live from then on, not as soon as the socket opens
                    await socket.send(_encode(self._subscribe()).decode())
                    await socket.send(_PING)
                    async for frame in socket:
                        if self._handle(_decode(frame)):
                            self._set_connected(True)
                            delay = BACKOFF_FIRST_S
            except websockets.ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code == 4401 and self._token() != token:
                    delay = 0.0  # expired, and refreshed meanwhile: straight back with the fresh token
                elif code in _FINAL_CLOSE:
                    self.state.ended = _FINAL_CLOSE[code]
                log.info("live connection closed (%s)", code)
            except websockets.InvalidStatus as refused:
                if refused.response.status_code in (401, 403):
                    self.state.ended = "the backend refused this token"
                log.info("live connection refused (%s)", refused.response.status_code)
            except (OSError, TimeoutError, websockets.InvalidHandshake, msgspec.DecodeError) as exc:
                log.info("live connection failed (%s)", type(exc).__name__)
            except Exception:  # a frame this version cannot apply, a listener that broke: never a silent stop
                log.exception("live connection broke; connecting again")
            self._set_connected(False)
            if self.state.ended is None:
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter, not security
                delay = min(max(delay, BACKOFF_FIRST_S) * 2, BACKOFF_MAX_S)

    def position(self, topic: str) -> tuple[str | None, int | None]:
        """Where this connection is in `topic`'s stream of changes: a new position means something changed."""
        return self._epoch, self._seq.get(topic)

    def _subscribe(self) -> dict[str, Any]:
        message: dict[str, Any] = {"op": "subscribe", "topics": list(self.topics)}
        if self._epoch is not None and self._seq:
            message["last_seq"], message["epoch"] = self._seq, self._epoch
        return message

    def _handle(self, message: dict[str, Any]) -> bool:
        """Apply one frame; True for the pong that says the subscription is caught up."""
        op, topic = message.get("op"), message.get("topic")
        if op == "pong":
            return not self.state.connected
        if topic not in self.state.items:
            return False
        if op == "snapshot":
            if message["epoch"] != self._epoch:  # another replica's numbering: no other topic resumes by ours
                self._seq.clear()
            self._epoch = message["epoch"]
            self.state.items[topic] = {}
            for item in message["data"]:
                self.state.apply(topic, str(item[_KEY_FIELD[topic]]), item)
        elif op == "update" and topic == "journeys" and "merged_into" in message["data"]:
            self.state.forget_journey(message["key"])
        elif op == "update":
            self.state.apply(topic, message["key"], message["data"])
            if topic == "journeys":
                self.state.latest_journeys.appendleft((message["seq"], message["data"]))
        else:
            return False
        self._seq[topic] = message["seq"]
        self._notify(topic)
        return False


class LiveRegistry:
    """One connection per token, kept while any tab uses it and for a grace period after
    (navigating between pages opens a new tab client before the old one is gone)."""

    def __init__(self, backend_url: str, grace_s: float = 30.0) -> None:
        self.backend_url = backend_url
        self.grace_s = grace_s
        self._connections: dict[str, LiveConnection] = {}
        self._users: dict[str, int] = {}
        self._closing: dict[str, asyncio.TimerHandle] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self.flow_history: dict[str, deque[FlowPoint]] = {}
        self.integration_history: dict[str, deque[IntegrationPoint]] = {}

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def acquire(self, token: str, source: Callable[[], str] | None = None) -> LiveConnection:
        """The connection of `token`'s sign-in; `source` answers its current token once it is refreshed."""
        key = self._key(token)
        if key in self._closing:
            self._closing.pop(key).cancel()
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connections[key] = LiveConnection(
                self.backend_url, source or token, flow_history=self.flow_history,
                integration_history=self.integration_history)
            connection.start()
        self._users[key] = self._users.get(key, 0) + 1
        return connection

    def release(self, token: str) -> None:
        key = self._key(token)
        self._users[key] -= 1
        if self._users[key] == 0:
            self._closing[key] = asyncio.get_running_loop().call_later(self.grace_s, self._close_later, key)

    def _close_later(self, key: str) -> None:
        task = asyncio.create_task(self._close(key))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _close(self, key: str) -> None:
        self._closing.pop(key, None)
        if self._users.get(key):
            return
        self._users.pop(key, None)
        connection = self._connections.pop(key, None)
        if connection is not None:
            await connection.stop()

    async def close_all(self) -> None:
        for handle in self._closing.values():
            handle.cancel()
        self._closing.clear()
        for key in list(self._connections):
            self._users.pop(key, None)
            await self._connections.pop(key).stop()
