"""The command message of CONTRACT section 3, shared by the backend's outbox and the connectors.

The backend publishes a `Command` on `svc.commands.<system>.<command>` with its id as
`Nats-Msg-Id`; the connector of `<system>` answers it with a `command.result` event.
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


def consumer_name(system: str) -> str:
    """The durable pull consumer on SVC_COMMANDS that the backend creates for each system's connector."""
    return f"connector-{system}"

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


def command_subject(command: Command) -> str:
    return f"svc.commands.{command.system}.{command.command}"


def command_result_id(command: Command) -> str:
    """The id of the `command.result` answering one attempt: a redelivered attempt gets the same answer id."""
    return f"result-{command.id}-{command.attempt}"[:128]


decode_command = msgspec.json.Decoder(Command).decode
