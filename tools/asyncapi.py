"""The AsyncAPI 3 document of Switchboard's messaging, generated from the msgspec types.

`docs/asyncapi.yaml` is this module's output (`python -m tools.asyncapi docs/asyncapi.yaml`),
and a test fails when the two differ. Each `Channel` below is one entry; the live websocket's
messages join as further entries built from their own msgspec types, with no change here.
The document describes the backend: it receives events, sends commands and requests snapshots.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from backend.live.schemas import Error, Ping, Pong, Snapshot, Subscribe, Unsubscribe, Update
from switchboard.commands import FLOOR_COMMANDS, RECORD_PUSH, V1_COMMANDS, Command
from switchboard.events import EVENT_TYPES
from switchboard.snapshots import SnapshotPage, SnapshotRequest

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"
SYSTEM_PARAMETER = {"description": "the publishing or receiving system, e.g. queue, crm"}


@dataclass(frozen=True)
class Channel:
    key: str
    address: str
    description: str
    messages: dict[str, type]  # message name → msgspec type of its payload
    action: Literal["send", "receive"]  # from the backend's side
    server: str
    reply: dict[str, type] | None = None
    parameters: tuple[str, ...] = ("system",)


def _title(type_: str) -> str:
    return "".join(part.capitalize() for part in type_.replace("_", ".").split("."))


def nats_channels() -> list[Channel]:
    events = [
        Channel(key=f"event_{t.replace('.', '_')}", address=f"svc.events.{{system}}.{t}", server="nats",
                description=f"`{t}` CloudEvents (structured mode) in stream SVC_EVENTS;"
                            " Nats-Msg-Id is `<source> <id>`",
                messages={_title(t): cls}, action="receive")
        for t, cls in EVENT_TYPES.items()
    ]
    return [
        *events,
        Channel(key="commands", address="svc.commands.{system}.{command}", server="nats",
                description="commands to a system's connector in stream SVC_COMMANDS; Nats-Msg-Id is the"
                " command id,"
                            " answered by a `command.result` event. The catalogue: "
                            + ", ".join(f"`{c}`" for c in sorted({*V1_COMMANDS, RECORD_PUSH,
                                                                  *FLOOR_COMMANDS.values()})),
                messages={"Command": Command}, action="send", parameters=("system", "command")),
        Channel(key="commands_site", address="svc.commands.{system}@{site}.{command}", server="nats",
                description="the same commands of a system commanded per site"
                            " (SWITCHBOARD_COMMANDS_PER_SITE), the site's dots as `~`: read through the"
                            " site's own consumer `connector-<system>@<site>`, by connectors limited to"
                            " that site only",
                messages={"Command": Command}, action="send", parameters=("system", "site", "command")),
        Channel(key="snapshot", address="svc.snapshot.{system}", server="nats",
                description="request/reply: the records a system holds for a site and day, paged by ref;"
                            " errors as NATS micro headers (503 unavailable, 400 bad request). Asked when"
                            " nobody answers on the site's subject",
                messages={"SnapshotRequest": SnapshotRequest}, reply={"SnapshotPage": SnapshotPage},
                action="send"),
        Channel(key="snapshot_site", address="svc.snapshot.{system}.{site}", server="nats",
                description="the same request on its site's subject, asked first: the only one a connector"
                            " limited to sites may answer",
                messages={"SnapshotRequest": SnapshotRequest}, reply={"SnapshotPage": SnapshotPage},
                action="send", parameters=("system", "site")),
    ]


def live_channels() -> list[Channel]:
    return [
        Channel(key="live_client", address="/api/v1/live", server="live", parameters=(),
                description="what a client sends on the live websocket (token as Authorization header or"
                " ?token=)",
                messages={"Subscribe": Subscribe, "Unsubscribe": Unsubscribe, "Ping": Ping},
                action="receive"),
        Channel(key="live_server", address="/api/v1/live", server="live", parameters=(),
                description="what the backend sends: a snapshot per subscribed topic, then updates (latest"
                " per key)",
                messages={"Snapshot": Snapshot, "Update": Update, "Pong": Pong, "Error": Error},
                action="send"),
    ]


def channel_sets() -> list[Channel]:
    """Every documented channel: NATS subjects and the websocket's `GET /api/v1/live` messages."""
    return [*nats_channels(), *live_channels()]


def _channel_doc(channel: Channel, messages: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "address": channel.address,
        "description": channel.description,
        "servers": [{"$ref": f"#/servers/{channel.server}"}],
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
    }
    if channel.parameters:
        doc["parameters"] = {
            p: {"description": f"the {p}" if p != "system" else SYSTEM_PARAMETER["description"]}
            for p in channel.parameters}
    return doc


def generate() -> dict[str, Any]:
    channels = channel_sets()
    payload_types: dict[str, type] = {}
    for channel in channels:
        payload_types.update(channel.messages)
        payload_types.update(channel.reply or {})
    names = list(payload_types)
    refs, schemas = msgspec.json.schema_components([payload_types[n] for n in names],
                                                   ref_template="#/components/schemas/{name}")
    messages = {name: {"name": name, "contentType": "application/json", "payload": ref}
                for name, ref in zip(names, refs, strict=True)}
    channel_docs: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel in channels:
        channel_docs[channel.key] = _channel_doc(channel, channel.messages)
        operation: dict[str, Any] = {
            "action": channel.action, "channel": {"$ref": f"#/channels/{channel.key}"},
            "messages": [{"$ref": f"#/channels/{channel.key}/messages/{name}"} for name in channel.messages],
        }
        if channel.reply:
            reply_key = f"{channel.key}_reply"
            channel_docs[reply_key] = {"address": None, "description": f"the reply to {channel.address}",
                                       "messages": {n: {"$ref": f"#/components/messages/{n}"}
                                                    for n in channel.reply}}
            operation["reply"] = {"channel": {"$ref": f"#/channels/{reply_key}"},
                                  "messages": [{"$ref": f"#/channels/{reply_key}/messages/{n}"}
                                               for n in channel.reply]}
        operations[f"{channel.action}_{channel.key}"] = operation
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Switchboard messaging", "version": "1",
                 "description": "Generated from the msgspec types by tools/asyncapi.py; see CONTRACT.md"
                                " sections 2, 3, 5 and 7. Do not edit by hand."},
        "servers": {
            "nats": {"host": "localhost:4222", "protocol": "nats",
                     "description": "NATS with JetStream (SWITCHBOARD_NATS_URL)"},
            "live": {"host": "localhost:8000", "pathname": "/api/v1/live", "protocol": "ws",
                     "description": "the backend's live websocket (CONTRACT section 7)"},
        },
        "channels": channel_docs,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return yaml.safe_dump(generate(), sort_keys=False, allow_unicode=True, width=110)


if __name__ == "__main__":
    (Path(sys.argv[1]) if len(sys.argv) > 1 else DOCUMENT).write_text(render())
