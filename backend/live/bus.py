"""Publishing a live update: one call, from wherever state changes, on any replica.

`await publish(topic, site, key, data)` sends the update on core NATS `svc.live.<topic>`; every
replica's hub (this one included) receives it there and delivers it to its own clients, so an
update made anywhere reaches clients connected anywhere, with no polling of Postgres. `data` is
encoded once, here.
"""

from __future__ import annotations

from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from backend.live.schemas import BusUpdate, Topic

SUBJECT_PREFIX = "svc.live."
TRACEPARENT = "traceparent"  # the NATS header carrying the W3C trace context (switchboard/tracing.py)
# `site` of an update that belongs to no site and that every reader may see (an integration's health)
ALL_SITES = "*"

_encode = msgspec.json.encode
_nc: NATS | None = None


def attach(nc: NATS | None) -> None:
    """Set (or clear, with None) the connection this process publishes live updates on."""
    global _nc  # noqa: PLW0603 - one bus per process, so any domain can publish with one call
    _nc = nc


def encode_update(site: str | None, key: object, data: Any) -> bytes:
    return _encode(BusUpdate(site=site, key=str(key), data=msgspec.Raw(_encode(data))))


async def publish(topic: Topic, site: str | None, key: object, data: Any,
                  traceparent: str | None = None) -> None:
    """Announce that `key` of `topic` at `site` is now `data`.

    `site` None: seen only by tokens for every site (a failure whose site is unknown, as in the API);
    `ALL_SITES`: seen by every reader of the topic. `traceparent`: the trace every hub's push continues.
    """
    if _nc is None:
        return  # a process without a backend (a CLI tool, a bench helper) has no live clients to tell
    await _nc.publish(SUBJECT_PREFIX + topic, encode_update(site, key, data),
                      headers={TRACEPARENT: traceparent} if traceparent else None)
