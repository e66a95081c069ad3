"""The canonical events of CONTRACT section 2, as msgspec Structs.

Every event is a CloudEvents 1.0 envelope; `type` is the tag of one tagged union, so a message
is decoded and validated in a single pass and dispatched with `match`.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

SYSTEM_PATTERN = r"[a-z][a-z0-9_]{0,31}"


def whole(pattern: str) -> str:
    r"""`pattern` as the whole value. msgspec tests a pattern with `re.search`, where `$` also matches before
    a final newline: `"e-1\n"` would pass as an id, and NATS, stripping a header's value, would take it for
    `e-1`'s duplicate. `(?!\n)` closes that, and means nothing more to a JSON Schema (ECMA) reader."""
    return f"^{pattern}$(?!\\n)"


CODE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"  # sites, services, counters, tickets, outcomes
Code = Annotated[str, Meta(pattern=whole(CODE_PATTERN))]
Ref = Annotated[str, Meta(pattern=whole(rf"{SYSTEM_PATTERN}:[A-Za-z0-9][A-Za-z0-9_.\-/]{{0,127}}"))]
EventId = Annotated[str, Meta(pattern=whole(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}"))]
Source = Annotated[str, Meta(pattern=whole(rf"/{SYSTEM_PATTERN}(/[A-Za-z0-9_.\-]{{1,64}})?"))]
Subject = Annotated[str, Meta(pattern=whole(r"[a-z][a-z0-9_]{0,31}:[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}"))]
TraceParent = Annotated[str, Meta(pattern=whole(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"))]
AwareTime = Annotated[datetime, Meta(tz=True)]
Count = Annotated[int, Meta(ge=0, le=100_000)]
Links = Annotated[list[Ref], Meta(max_length=16)]

Channel = Literal["web", "phone", "branch"]
Priority = Literal["normal", "high"]
Upstream = Literal["up", "degraded", "down"]

# A journey is one customer's visit across a handful of systems: a few references each. Every event of a
# journey reads and writes all of its references, so without a bound a connector linking ever more of them
# would make each next event of that journey slower; past it, the event that would add more is refused
# (backend/ingest/apply.py). A command carries its journey's references, so as many.
MAX_JOURNEY_REFS = 256
# Likewise the systems and sites that have placed a journey (`queue`, `queue@north`...): each keeps its claim
# in the journey's state, which every next event reads and writes whole; a visit has a handful.
MAX_SITE_AUTHORITIES = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

RESERVED_SYSTEMS = frozenset({"manual", "switchboard"})
SEED_SYSTEMS = frozenset({"crm", "appointments", "queue", "contact_center", "core"})


class _Data(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class JourneyData(_Data, kw_only=True):
    site: Code
    links: Links = []


class AppointmentBookedData(JourneyData, kw_only=True):
    service: Code
    slot_start: AwareTime
    channel: Channel


class AppointmentRescheduledData(JourneyData, kw_only=True):
    slot_start: AwareTime


class ReasonData(JourneyData, kw_only=True):
    reason_code: Code


class ChannelData(JourneyData, kw_only=True):
    channel: Channel


class EligibilityCheckedData(JourneyData, kw_only=True):
    # `unverified`: staff let the customer through while the core system was down, to be verified later
    result: Literal["passed", "failed", "unverified"]
    reason_code: Code | None = None


class PriorityChangedData(JourneyData, kw_only=True):
    priority: Priority
    reason_code: Code | None = None


class InteractionLoggedData(JourneyData, kw_only=True):
    channel: Channel
    reason_code: Code
    outcome: Code


class TicketIssuedData(JourneyData, kw_only=True):
    ticket: Code
    queue_name: Code


class CounterData(JourneyData, kw_only=True):
    counter: Code


class ServiceCompletedData(JourneyData, kw_only=True):
    outcome: Code


class CapacityChangedData(_Data, kw_only=True):
    site: Code
    counters_open: Count
    counters_busy: Count
    staff_on_duty: Count
    queue_length: Count


class HeartbeatData(_Data, kw_only=True):
    upstream: Upstream
    version: Code


class CommandResultData(_Data, kw_only=True):
    command_id: EventId
    status: Literal["ok", "failed", "unavailable"]
    error: Annotated[str, Meta(max_length=200, pattern=whole(r"[A-Za-z0-9_.:\- ]*"))] | None = None
    # the command's site: required of a connector limited to sites (its answer's subject carries it), so that
    # it settles only its sites' commands
    site: Code | None = None


class CloudEvent(msgspec.Struct, kw_only=True, tag_field="type", forbid_unknown_fields=True,
                 omit_defaults=True, dict=True):
    """The envelope: CloudEvents 1.0, structured mode. Never changed once decoded: `system` and `key`, asked
    for many times on the way to Postgres, are worked out once (`dict=True` lets them be cached)."""

    kind: ClassVar[Literal["journey", "capacity", "heartbeat", "command_result"]] = "journey"

    specversion: Literal["1.0"]
    id: EventId
    source: Source
    subject: Subject
    time: AwareTime
    datacontenttype: Literal["application/json"] | UnsetType = UNSET
    traceparent: TraceParent | UnsetType = UNSET
    if TYPE_CHECKING:
        data: Any  # each event type declares its own; the type checker sees it on any event

    @functools.cached_property
    def system(self) -> str:
        return self.source.split("/", 2)[1]

    @property
    def type(self) -> str:
        return self.__struct_config__.tag  # type: ignore[return-value]

    @functools.cached_property
    def key(self) -> str:
        """Orders events by time, then (source, id): the tie-break that makes merges deterministic.

        Time is exact epoch microseconds, zero-padded so that keys compare as strings (on the hot path:
        integer arithmetic, no formatting of dates).
        """
        return f"{(self.time - _EPOCH) // _MICROSECOND:017d}|{self.source}|{self.id}"

    def key_by(self, now: datetime) -> str:
        """`key`, dated `now` at the latest: for state that is only ever the newest report (capacity, a
        connector's heartbeat), where one report from a clock running ahead must not outrank the reports
        after it."""
        if self.time <= now:
            return self.key
        return f"{(now - _EPOCH) // _MICROSECOND:017d}|{self.source}|{self.id}"


class AppointmentBooked(CloudEvent, tag="appointment.booked", kw_only=True):
    data: AppointmentBookedData


class AppointmentRescheduled(CloudEvent, tag="appointment.rescheduled", kw_only=True):
    data: AppointmentRescheduledData


class AppointmentCancelled(CloudEvent, tag="appointment.cancelled", kw_only=True):
    data: ReasonData


class AppointmentNoShow(CloudEvent, tag="appointment.no_show", kw_only=True):
    data: JourneyData


class ReminderSent(CloudEvent, tag="reminder.sent", kw_only=True):
    data: ChannelData


class EligibilityChecked(CloudEvent, tag="eligibility.checked", kw_only=True):
    data: EligibilityCheckedData


class PriorityChanged(CloudEvent, tag="customer.priority_changed", kw_only=True):
    data: PriorityChangedData


class InteractionLogged(CloudEvent, tag="interaction.logged", kw_only=True):
    data: InteractionLoggedData


class CustomerArrived(CloudEvent, tag="customer.arrived", kw_only=True):
    data: JourneyData


class TicketIssued(CloudEvent, tag="ticket.issued", kw_only=True):
    data: TicketIssuedData


class TicketCalled(CloudEvent, tag="ticket.called", kw_only=True):
    data: CounterData


class ServiceStarted(CloudEvent, tag="service.started", kw_only=True):
    data: CounterData


class ServiceCompleted(CloudEvent, tag="service.completed", kw_only=True):
    data: ServiceCompletedData


class CapacityChanged(CloudEvent, tag="capacity.changed", kw_only=True):
    kind: ClassVar = "capacity"
    data: CapacityChangedData


class ConnectorHeartbeat(CloudEvent, tag="connector.heartbeat", kw_only=True):
    kind: ClassVar = "heartbeat"
    data: HeartbeatData


class CommandResult(CloudEvent, tag="command.result", kw_only=True):
    kind: ClassVar = "command_result"
    data: CommandResultData


Event = (
    AppointmentBooked | AppointmentRescheduled | AppointmentCancelled | AppointmentNoShow | ReminderSent
    | EligibilityChecked | PriorityChanged | InteractionLogged | CustomerArrived | TicketIssued | TicketCalled
    | ServiceStarted | ServiceCompleted | CapacityChanged | ConnectorHeartbeat | CommandResult
)
EVENT_TYPES: dict[str, type[CloudEvent]] = {
    cls.__struct_config__.tag: cls for cls in Event.__args__
}
JOURNEY_TYPES = frozenset(t for t, cls in EVENT_TYPES.items() if cls.kind == "journey")


def nats_subject(event: CloudEvent, *, with_site: bool = False, site: str | None = None) -> str:
    """`svc.events.<system>.<type>`; `with_site` (a connector limited to sites) adds the event's site as a
    last token, which NATS permissions check and the backend compares with `data.site`; `site` names that
    token outright (a heartbeat has no site of its own: a connector limited to sites sends it on its first
    site's subject)."""
    site = site or (getattr(event.data, "site", None) if with_site else None)
    return f"svc.events.{event.system}.{event.type}" + (f".{site}" if site else "")


def nats_msg_id(source: str, event_id: str) -> str:
    return f"{source} {event_id}"


def refs_of(event: CloudEvent) -> list[str]:
    """The references a journey event names: its subject, then its links."""
    return [event.subject, *event.data.links]
