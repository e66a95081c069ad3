"""A client of the live websocket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import websockets
from websockets.asyncio.client import ClientConnection

from tools.backend_process import BackendProcess

_decode = msgspec.json.decode


def ws_url(backend: BackendProcess) -> str:
    return backend.url.replace("http://", "ws://") + "/api/v1/live"


@contextlib.asynccontextmanager
async def connect(backend: BackendProcess, token: str, **kwargs: Any) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(
        ws_url(backend), additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10, **kwargs
    ) as ws:
        yield ws


async def receive(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return _decode(await ws.recv())


async def receive_until(
    ws: ClientConnection, match: Callable[[dict[str, Any]], bool], timeout: float = 15.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first frame that matches, and every frame received before it."""
    before: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                frame = _decode(await ws.recv())
                if match(frame):
                    return frame, before
                before.append(frame)
    except TimeoutError:
        seen = [(f["op"], f.get("topic"), f.get("site")) for f in before]
        raise AssertionError(f"no matching frame within {timeout}s; received {seen}") from None


async def subscribe(ws: ClientConnection, topics: list[str], **fields: Any) -> dict[str, dict[str, Any]]:
    """Subscribe and return the snapshot of each topic."""
    await ws.send(msgspec.json.encode({"op": "subscribe", "topics": topics, **fields}).decode())
    snapshots: dict[str, dict[str, Any]] = {}
    while len(snapshots) < len(topics):
        frame, _ = await receive_until(ws, lambda f: f["op"] == "snapshot")
        snapshots[frame["topic"]] = frame
    return snapshots


def is_update(
    topic: str, match: Callable[[dict[str, Any]], bool] = lambda _: True
) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["op"] == "update" and f["topic"] == topic and match(f)
