"""What the five simulated upstreams share: their own records, and faults between them and the SDK.

Each simulated system is a real `Connector`: it keeps the records it is authoritative for
(a snapshot is built from them, never from Switchboard), changes them through `change`, and maps
every change to one canonical event, except when a fault says otherwise.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, ClassVar

import msgspec

from connectors.sdk import OK, Connector, Outcome, Unavailable
from connectors.sim.faults import Faults
from switchboard.commands import RECORD_PUSH, Command
from switchboard.events import CloudEvent, Upstream, nats_msg_id, nats_subject
from switchboard.snapshots import SnapshotRecord
from switchboard.waits import stop_tasks

_encode = msgspec.json.Encoder().encode


@dataclass
class Record:
    ref: str
    site: str
    created_at: datetime
    updated_at: datetime
    stage: str | None = None
    links: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)


def _snapshot_record(record: Record) -> SnapshotRecord:
    return SnapshotRecord(ref=record.ref, site=record.site, stage=record.stage, links=list(record.links),
                          fields=dict(record.fields), updated_at=record.updated_at)


class SimulatedSystem(Connector):
    prefix: ClassVar[str]  # of this system's external ids, e.g. "T" for tickets
    commands: ClassVar[frozenset[str]] = frozenset({RECORD_PUSH})

    def __init__(self, *, faults: Faults | None = None, seed: int | None = None) -> None:
        super().__init__("sim")
        self.faults = faults or Faults()
        self.random = random.Random(seed)
        self.records: dict[str, Record] = {}
        # changes made under the drift fault: the upstream knows, Switchboard does not
        self.silent_changes = 0
        # what drives this upstream while it runs (a branch network, or the system's own loops)
        self.drivers: list[Callable[[], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def up(self) -> bool:
        return not self.faults.outage

    def new_ref(self) -> str:
        return f"{self.system}:{self.prefix}-{uuid.uuid4().hex[:10].upper()}"

    async def change(self, ref: str, type_: str, data: dict[str, Any], *, site: str, stage: str | None = None,
                     fields: dict[str, Any] | None = None, links: Sequence[str] = ()) -> Record:
        """Change this system's record, then tell Switchboard (one event)."""
        now = datetime.now(UTC)
        record = self.records.get(ref)
        if record is None:
            record = self.records[ref] = Record(ref=ref, site=site, created_at=now, updated_at=now)
        record.updated_at = now
        record.stage = stage or record.stage
        record.fields.update(fields or {})
        record.links.extend(link for link in links if link not in record.links)
        payload = {"site": site, **({"links": list(links)} if links else {}), **data}
        await self.send(self.event(type_, ref, payload, time=now))
        return record

    async def send(self, event: CloudEvent) -> None:
        """The upstream's delivery to the SDK, where the faults act.

        A system not connected to Switchboard (no connector running for it) keeps its records and
        tells no one, as an upstream without an integration would.
        """
        if self.emitter is None:
            return
        faults, chance = self.faults, self.random.random
        if faults.drift and chance() < faults.drift:
            self.silent_changes += 1
            return
        if faults.malformed and chance() < faults.malformed:
            self._send_malformed(event)
            return
        if faults.out_of_order and chance() < faults.out_of_order:
            self.spawn(self._send_late(event, self.random.uniform(0.3, 1.5)))
            return
        await self.emit(event)
        if faults.duplicates and chance() < faults.duplicates:
            await self.emit(event)

    async def _send_late(self, event: CloudEvent, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.emit(event)

    def _send_malformed(self, event: CloudEvent) -> None:
        """The event with its required `time` missing and a field of the wrong type: invalid, never PII."""
        doc = msgspec.to_builtins(event)
        doc["type"] = event.type
        del doc["time"]
        doc["data"]["site"] = 12345
        assert self.emitter is not None
        self.emitter.emit_raw([(nats_subject(event), nats_msg_id(event.source, event.id), _encode(doc))])

    def spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        for driver in self.drivers:
            self.spawn(driver())

    async def stop(self) -> None:
        await stop_tasks(list(self._tasks))

    # --- the Connector side ---------------------------------------------------------------------

    async def upstream_status(self) -> Upstream:
        if self.faults.outage:
            return "down"
        return "degraded" if self.faults.slow else "up"

    async def _reach_upstream(self) -> None:
        if self.faults.outage:
            raise Unavailable(f"{self.system} is down")
        if self.faults.slow:
            await asyncio.sleep(self.faults.slow)

    async def snapshot(self, site: str, day: date) -> Sequence[SnapshotRecord]:
        await self._reach_upstream()
        return [_snapshot_record(r) for r in list(self.records.values())
                if r.site == site and r.created_at.date() == day]

    async def lookup(self, site: str, day: date, refs: Sequence[str]) -> Sequence[SnapshotRecord]:
        await self._reach_upstream()
        found = (self.records.get(ref) for ref in refs)
        return [_snapshot_record(r) for r in found if r is not None and r.site == site]

    async def handle(self, command: Command) -> Outcome:
        await self._reach_upstream()
        if command.command == RECORD_PUSH:
            return self.take_pushed_record(command)
        return await self.execute(command)

    def take_pushed_record(self, command: Command) -> Outcome:
        """`record.push`: Switchboard's state of one reference becomes this system's record (created if
        missing).

        No event follows: the state came from Switchboard, which already holds it.
        """
        ref, stage, fields = (command.data.get("ref"), command.data.get("stage"),
                              command.data.get("fields", {}))
        if not (isinstance(ref, str) and isinstance(fields, dict)
                and (stage is None or isinstance(stage, str))):
            return Outcome("failed", "record.push needs a ref, a fields object and an optional stage")
        now = datetime.now(UTC)
        record = self.records.get(ref)
        if record is None:
            record = self.records[ref] = Record(ref=ref, site=command.site, created_at=now, updated_at=now)
        record.stage = stage or record.stage
        record.fields.update(fields)
        record.updated_at = now
        return OK

    async def execute(self, command: Command) -> Outcome:
        """Run a command against this system's records (the upstream is reachable)."""
        return Outcome("failed", f"{self.system} does not handle {command.command}")

    def own_record(self, command: Command) -> Record | None:
        """The record of this system among the command's references."""
        return next((self.records[ref] for ref in command.refs if ref in self.records), None)

    # --- silent drift on demand -----------------------------------------------------------------

    def drift_one(self) -> Record | None:
        """Change one record without an event, as an upstream edited by hand would."""
        candidates = [r for r in self.records.values() if self.drift_field(r)]
        if not candidates:
            return None
        record = self.random.choice(candidates)
        name, value = self.drift_field(record)  # type: ignore[misc]
        record.fields[name] = value
        record.updated_at = datetime.now(UTC)
        self.silent_changes += 1
        return record

    def drift_field(self, record: Record) -> tuple[str, Any] | None:
        """The field a hand edit would change on this record, and its new value; None if none."""
        return None
