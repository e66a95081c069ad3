"""The SDK's answer to a command message (connectors/sdk/runtime.py): whatever the upstream says or the
message holds, an answer the backend takes, never an exception that stops the connector's command loop."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from backend.ingest.validate import Accepted, validate
from connectors.sdk.connector import Connector, Outcome
from connectors.sdk.runtime import ConnectorRuntime
from switchboard.commands import Command
from switchboard.events import MAX_JOURNEY_REFS, SEED_SYSTEMS, CommandResult


class Counter(Connector):
    system = "queue"
    commands = frozenset({"ticket.call"})

    def __init__(self, error: str | None, status: str = "failed") -> None:
        super().__init__()
        self.error, self.status = error, status
        self.handled: list[Command] = []

    async def handle(self, command: Command) -> Outcome:
        self.handled.append(command)
        return Outcome(self.status, self.error)  # type: ignore[arg-type]


def command(refs: int, attempt: int = 1) -> Command:
    return Command(id=uuid.uuid4().hex, system="queue", command="ticket.call", journey_id=uuid.uuid4(),
                   refs=[f"queue:T-{n}" for n in range(refs)], site="north", attempt=attempt,
                   created_at=datetime.now(UTC))


async def answered(tmp_path: Path, upstream_error: str, body: bytes) -> tuple[CommandResult, Counter]:
    connector = Counter(upstream_error)
    answer = await ConnectorRuntime(connector, nats_url="nats://unused", data_dir=tmp_path).answer(body)
    assert isinstance(answer, CommandResult)
    # what the backend's validation makes of it: taken, not refused
    checked = validate(msgspec.json.encode(answer), max_bytes=65536, known_systems=SEED_SYSTEMS)
    assert isinstance(checked, Accepted), checked
    return answer, connector


async def test_an_upstream_error_in_any_alphabet_is_answered_not_raised(tmp_path):
    # "für" once failed the answer's own validation: the command loop stopped, the command went unacked
    body = msgspec.json.encode(command(1))
    result, _ = await answered(tmp_path, "Ticket für Schalter 3 nicht gefunden", body)
    assert (result.data.status, result.data.error) == ("failed", "Ticket f r Schalter 3 nicht gefunden")


async def test_an_upstream_error_naming_a_person_is_answered_without_it(tmp_path):
    # the backend refuses such an answer (pii_rejected): the command would time out and be sent again
    body = msgspec.json.encode(command(1))
    withheld = ("failed", "upstream reason withheld: it reads as personal data")
    for upstream_error in ("record 1234567890 locked", "record of +44 20 7946 0958 is locked"):
        result, _ = await answered(tmp_path, upstream_error, body)
        assert (result.data.status, result.data.error) == withheld


async def test_a_command_carrying_as_many_references_as_a_journey_may_hold_is_handled(tmp_path):
    # more than 64 once failed to decode: answered "malformed" at every attempt
    sent = command(MAX_JOURNEY_REFS)
    _, connector = await answered(tmp_path, "no", msgspec.json.encode(sent))
    assert [c.id for c in connector.handled] == [sent.id]


async def test_a_malformed_command_is_answered_once_per_attempt(tmp_path):
    body = msgspec.json.encode({**msgspec.to_builtins(command(1, attempt=3)), "refs": "not a list"})
    result, connector = await answered(tmp_path, "no", body)
    sent_id = msgspec.json.decode(body)["id"]
    assert (result.id, result.data.command_id, result.data.error) == (f"result-{sent_id}-3", sent_id,
                                                                      "malformed command")
    assert connector.handled == []


async def test_a_command_done_comes_again_and_is_answered_not_done_again_even_after_a_restart(tmp_path):
    """Its answer was late (a reconnect, a long batch), so the relay sent attempt 2: the customer is not
    called twice. A failed command is tried again, as the relay means it to be."""
    sent = command(1)
    caller = Counter(None, "ok")
    first = await ConnectorRuntime(caller, nats_url="nats://unused", data_dir=tmp_path).answer(
        msgspec.json.encode(sent))
    again = msgspec.json.encode(msgspec.structs.replace(sent, attempt=2))
    restarted = ConnectorRuntime(caller, nats_url="nats://unused", data_dir=tmp_path)  # the same spool
    second = await restarted.answer(again)
    assert isinstance(first, CommandResult) and isinstance(second, CommandResult)
    assert (first.data.status, second.data.status, [c.attempt for c in caller.handled]) == ("ok", "ok", [1])
    failing = Counter("no")
    runtime = ConnectorRuntime(failing, nats_url="nats://unused", data_dir=tmp_path / "other")
    retried = command(1)
    for attempt in (1, 2):
        await runtime.answer(msgspec.json.encode(msgspec.structs.replace(retried, attempt=attempt)))
    assert [c.attempt for c in failing.handled] == [1, 2]
