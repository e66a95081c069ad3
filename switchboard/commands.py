"""The command message of CONTRACT section 3, shared by the backend's outbox and the connectors.

The backend publishes a `Command` on `svc.commands.<system>.<command>` with its id as
`Nats-Msg-Id`; the connector of `<system>` answers it with a `command.result` event. A system commanded
per site (`SWITCHBOARD_COMMANDS_PER_SITE`) gets its commands on `svc.commands.<system>@<site>.<command>`
instead, read through a consumer per site, so that a connector limited to sites never receives another
site's (docs/contract-notes.md).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from switchboard.events import MAX_JOURNEY_REFS, SYSTEM_PATTERN, AwareTime, Code, EventId, Ref, whole

CommandName = Annotated[str, Meta(pattern=whole(r"[a-z][a-z0-9_]{0,31}(\.[a-z][a-z0-9_]{0,31}){1,3}"))]
System = Annotated[str, Meta(pattern=whole(SYSTEM_PATTERN))]

COMMANDS_STREAM = "SVC_COMMANDS"


# the command consumer's metadata that says its system is commanded per site
PER_SITE_METADATA = {"switchboard_commands": "per_site"}


def site_token(site: str) -> str:
    """A site as one subject token and as part of a consumer's name, neither of which may hold a `.`: its
    dots become `~`, which no site code holds, so no two sites share a token."""
    return site.replace(".", "~")


def commands_to(system: str, site: str | None = None) -> str:
    """The subject token a system's commands go to: the system's, or with `site` that site's of it."""
    return system if site is None else f"{system}@{site_token(site)}"


def consumer_name(system: str, site: str | None = None) -> str:
    """The durable pull consumer on SVC_COMMANDS that the backend creates for a system's connectors, or with
    `site` for its connectors of that site when the system is commanded per site."""
    return f"connector-{commands_to(system, site)}"

# The commands of the v1 routing rules (CONTRACT section 3).
V1_COMMANDS = frozenset({"visit.hold", "ticket.prioritize", "visit.context", "staff.alert",
                         "journey.summary"})
# Floor operations (CONTRACT section 10): staff act on a customer through the queue system; each command
# names the ticket in `refs` and answers with the canonical event of what happened (data: `counter` for
# call, recall and start; `queue_name` for transfer; `outcome` for complete; `reason` where given).
FLOOR_COMMANDS = {"call": "ticket.call", "recall": "ticket.recall", "no_show": "ticket.no_show",
                  "transfer": "ticket.transfer", "start": "service.start", "complete": "service.complete"}
# the canonical event a floor command carried out is followed by, on the ticket's reference
FLOOR_COMMAND_EVENTS = {"ticket.call": "ticket.called", "ticket.recall": "ticket.called",
                        "ticket.no_show": "appointment.no_show", "ticket.transfer": "ticket.issued",
                        "service.start": "service.started", "service.complete": "service.completed"}
# Switchboard's record of one reference, sent for the system to take as its own: reconciliation's
# `push_ours` and the replay of a fallback (CONTRACT sections 5 and 6; data: `ref`, `site`, `stage`,
# `fields`).
RECORD_PUSH = "record.push"


class Command(msgspec.Struct, kw_only=True, frozen=True):
    id: EventId
    system: System
    command: CommandName
    journey_id: uuid.UUID
    refs: Annotated[list[Ref], Meta(max_length=MAX_JOURNEY_REFS)]
    site: Code
    data: dict[str, Any] = {}
    attempt: Annotated[int, Meta(ge=1)] = 1
    created_at: AwareTime


def command_subject(command: Command, *, per_site: bool = False) -> str:
    return f"svc.commands.{commands_to(command.system, command.site if per_site else None)}.{command.command}"


def command_result_id(command: Command) -> str:
    """The id of the `command.result` answering one attempt: a redelivered attempt gets the same answer id."""
    return f"result-{command.id}-{command.attempt}"[:128]


decode_command = msgspec.json.Decoder(Command).decode
