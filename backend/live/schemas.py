"""The live protocol (CONTRACT section 7) and the message that carries an update between replicas.

Client messages are one msgspec tagged union on `op`: a frame is decoded and validated once and
dispatched with `match`. Server messages are encoded once per update and shared by every client.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from switchboard.events import Code

Topic = Literal["flow", "capacity", "journeys", "failures", "reconciliation", "fallbacks", "integrations",
                "alerts"]
TOPICS: tuple[Topic, ...] = (
    "flow",
    "capacity",
    "journeys",
    "failures",
    "reconciliation",
    "fallbacks",
    "integrations",
    "alerts",
)

# A subscribe names a few topics and sites; anything bigger is a broken or hostile client.
MAX_CLIENT_MESSAGE_BYTES = 4096
Seq = Annotated[int, Meta(ge=0)]


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="op", forbid_unknown_fields=True, kw_only=True):
    topics: Annotated[list[Topic], Meta(min_length=1, max_length=len(TOPICS))]
    # None: every site the token allows
    sites: Annotated[list[Code], Meta(max_length=256)] | None = None
    # resume: the last `seq` seen per topic, valid only with the `epoch` its snapshot carried
    last_seq: dict[Topic, Seq] | None = None
    epoch: str | None = None


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="op", forbid_unknown_fields=True):
    topics: Annotated[list[Topic], Meta(min_length=1, max_length=len(TOPICS))]


class Ping(msgspec.Struct, tag="ping", tag_field="op", forbid_unknown_fields=True):
    pass


ClientMessage = Subscribe | Unsubscribe | Ping


class Snapshot(msgspec.Struct, tag="snapshot", tag_field="op", kw_only=True):
    topic: Topic
    seq: int
    # which replica's numbering `seq` belongs to: resume with `last_seq` only against the same epoch
    epoch: str
    data: list[Any]


class Update(msgspec.Struct, tag="update", tag_field="op", kw_only=True):
    topic: str
    seq: int
    site: str | None
    key: str
    data: msgspec.Raw


class Pong(msgspec.Struct, tag="pong", tag_field="op"):
    pass


class Error(msgspec.Struct, tag="error", tag_field="op"):
    reason: str


class BusUpdate(msgspec.Struct, array_like=True):
    """One update on `svc.live.<topic>`: `data` is encoded once, by the replica where the state changed."""

    site: str | None
    key: str
    data: msgspec.Raw
