"""What a connector author writes: a `Connector` subclass mapping its system to canonical events.

The author sets `system` and `commands`, calls `self.event(...)` and `await self.emit(...)` when
the upstream changes, and implements `snapshot` (the system's records for a site and day) and
`handle` (one command). Publishing, the spool, heartbeats, the snapshot responder and the command
consumer are the SDK's (`connectors.sdk.runtime`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, ClassVar, Literal, Protocol

import msgspec

from switchboard.commands import Command
from switchboard.events import EVENT_TYPES, CloudEvent, Upstream
from switchboard.snapshots import SnapshotRecord


class Unavailable(Exception):  # noqa: N818 - a state of the upstream, not a bug
    """Raised by `snapshot` or `handle` when the upstream cannot be reached."""


class Outcome(msgspec.Struct, frozen=True):
    status: Literal["ok", "failed", "unavailable"]
    error: str | None = None


OK = Outcome("ok")


class Emitter(Protocol):
    """Where a connector's events go; the runtime provides the spool-backed one."""

    async def emit(self, events: Sequence[CloudEvent]) -> None: ...

    def emit_raw(self, rows: Sequence[tuple[str, str, bytes]]) -> None:
        """Already encoded (subject, Nats-Msg-Id, body): for tools and fault injection, not mappings."""


class Connector:
    system: ClassVar[str]
    version: ClassVar[str] = "1.0.0"
    commands: ClassVar[frozenset[str]] = frozenset()  # the command names `handle` understands

    def __init__(self, instance: str = "1") -> None:
        self.instance = instance
        self.emitter: Emitter | None = None
        self.handle_timeout = 10.0  # seconds `handle` may take before the answer is `unavailable`

    @property
    def source(self) -> str:
        return f"/{self.system}"

    @property
    def name(self) -> str:
        return f"{self.system}-{self.instance}"

    def event(self, type_: str, ref: str, data: dict[str, Any], *, time: datetime | None = None,
              id: str | None = None) -> CloudEvent:  # noqa: A002 - the CloudEvents attribute name
        """A canonical event about `<system>:<ref>` (or a `site:`/`connector:` subject), validated now."""
        subject = ref if ":" in ref else f"{self.system}:{ref}"
        return msgspec.convert({
            "specversion": "1.0", "id": id or uuid.uuid4().hex, "source": self.source, "subject": subject,
            "time": time or datetime.now(UTC), "datacontenttype": "application/json", "data": data,
        }, EVENT_TYPES[type_])

    async def emit(self, *events: CloudEvent) -> None:
        """Hand events to the SDK; on return they are in the durable spool."""
        if self.emitter is None:
            raise RuntimeError(f"connector {self.name} is not running")
        await self.emitter.emit(events)

    # --- what the author implements -------------------------------------------------------------

    async def start(self) -> None:
        """Start following the upstream (subscribe, poll…); called once the SDK is ready to emit."""

    async def stop(self) -> None:
        """Stop following the upstream."""

    async def upstream_status(self) -> Upstream:
        """What the heartbeat reports."""
        return "up"

    async def snapshot(self, site: str, day: date) -> Sequence[SnapshotRecord]:
        """Every record this system holds for a site and day; the SDK sorts and pages them."""
        raise Unavailable("this connector keeps no snapshot")

    async def lookup(self, site: str, day: date, refs: Sequence[str]) -> Sequence[SnapshotRecord]:
        """The records among `refs` (a snapshot request with `refs`): by default those of `day`'s snapshot.

        Override to find them whatever day they were made, as the reconciler then asks for a record
        of another day (a booking made days ahead) by reference.
        """
        wanted = set(refs)
        return [r for r in await self.snapshot(site, day) if r.ref in wanted]

    async def handle(self, command: Command) -> Outcome:
        """Execute one command; raise `Unavailable` when the upstream cannot be reached."""
        return Outcome("failed", f"{self.system} does not handle {command.command}")
