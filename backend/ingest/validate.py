"""Turn one message's bytes into a canonical event, or a failure with its reason and a redacted payload.

The common case is one typed decode of the whole message (the tagged union). Only a message that
fails it is parsed generically, to tell personal data (refused whole) from unknown non-personal
fields (dropped and counted) from plain invalid input. Either way the values of the event it makes
are checked for personal data (switchboard/privacy.py), and its date and subject against what its
sender may say (`Trust`). Everything here costs time linear in the message's size.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Concatenate, Literal, ParamSpec, TypedDict

import msgspec

from backend.ingest.config import IngestSection
from switchboard.events import EVENT_TYPES, RESERVED_SYSTEMS, CloudEvent, Code, CommandResult, Event
from switchboard.privacy import (
    REDACTED,
    excerpt,
    is_pii_key,
    looks_personal,
    looks_personal_identifier,
    redact,
    redact_key,
    scrub,
    scrub_identifier,
)

__all__ = ["REDACTED", "Accepted", "Rejected", "Trust", "redact", "rejected_event", "scrub", "trust_of",
           "validate"]

FailureKind = Literal["invalid_event", "pii_rejected", "source_mismatch", "unauthorized_source",
                      "apply_error"]

log = logging.getLogger(__name__)
_P = ParamSpec("_P")

_decoder = msgspec.json.Decoder(Event)
# deeper than any canonical event; deeper documents are refused unread (Postgres' jsonb and recursion have
# limits)
MAX_DEPTH = 32
_REASON_PATHS = 10  # personal fields named in a refusal's reason
_PATH_KEY_CHARS = 64  # of each key in such a path
_QUOTED = re.compile(r"'[^']*'")


class Trust(msgspec.Struct, frozen=True, kw_only=True):
    """What a connector may say about the world (CONTRACT section 9).

    `max_future_s`: how far after its arrival an event may be dated. `acts_for`: per system, the other
    systems whose references it may use as an event's subject (contact_center books appointments).
    """

    max_future_s: float = 300.0
    acts_for: Mapping[str, frozenset[str]] = msgspec.field(
        default_factory=lambda: {"contact_center": frozenset({"appointments"})})

    @classmethod
    def from_pairs(cls, max_future_s: float, pairs: Iterable[str]) -> Trust:
        """From `system=other` pairs (`SWITCHBOARD_ACTS_FOR`), a system named once per system it acts for."""
        acts_for: dict[str, set[str]] = {}
        for pair in pairs:
            system, _, other = pair.partition("=")
            if system.strip() and other.strip():
                acts_for.setdefault(system.strip(), set()).add(other.strip())
        return cls(max_future_s=max_future_s, acts_for={k: frozenset(v) for k, v in acts_for.items()})


DEFAULT_TRUST = Trust()


def trust_of(section: IngestSection) -> Trust:
    """`SWITCHBOARD_MAX_FUTURE_S` and `SWITCHBOARD_ACTS_FOR`."""
    return Trust.from_pairs(section.max_future_s, section.acts_for)


class Accepted(msgspec.Struct, frozen=True):
    event: CloudEvent
    dropped_fields: int = 0
    # the one site its sender may speak for, when it is limited to sites (backend/journeys/merge.py)
    scope: str | None = None


class Rejected(msgspec.Struct, frozen=True, kw_only=True):
    kind: FailureKind
    reason: str
    payload: Any
    system: str | None = None
    site: str | None = None
    subject: str | None = None
    event_source: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    # the sites its sender was limited to (the event's own, once it was read): a retry applies it there alone
    sender_sites: tuple[str, ...] | None = None
    # too large to be read, even for personal data: erased from its stream like one holding some
    unread: bool = False


def _personal_paths(data: Any, known: frozenset[str], root: str = "$.data") -> list[str]:
    """Paths (the first few, from `root`) of unknown fields of `data` that are personal by name or by
    content.

    One pass over the document, each string read once by linear-time patterns; a path is kept as a chain
    of references to its parent and spelt out only for the few named in the reason.
    """
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = []
    if isinstance(data, dict):
        stack = [(v, (None, k)) for k, v in data.items() if k not in known]
    elif isinstance(data, list):
        stack = [(v, (None, i)) for i, v in enumerate(data)]
    while stack and len(found) < _REASON_PATHS:
        value, path = stack.pop()
        key = path[1]
        if (isinstance(key, str) and is_pii_key(key)) or (isinstance(value, str) and looks_personal(value)):
            found.append(path)
        elif isinstance(value, dict):
            stack.extend((v, (path, k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, (path, i)) for i, v in enumerate(value))
    return [_spelt(path, root) for path in found]


def _personal_known_values(doc: dict[str, Any], envelope_known: frozenset[str],
                           data_known: frozenset[str]) -> list[str]:
    """Known fields of an event that did not decode whose strings look personal (an e-mail as its id...)."""
    data = doc.get("data")
    fields = [(f"$.{k}", v) for k, v in doc.items() if k in envelope_known and k != "data"]
    if isinstance(data, dict):
        fields += [(f"$.data.{k}", v) for k, v in data.items() if k in data_known]
    found = []
    for path, value in fields:
        texts = value if isinstance(value, list) else [value]
        free_text = path == "$.data.error"
        if any(isinstance(t, str) and (looks_personal_identifier(t) or (free_text and looks_personal(t)))
               for t in texts):
            found.append(path)
    return found


def _spelt(path: tuple[Any, ...] | None, root: str) -> str:
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(f"[{key}]" if isinstance(key, int) else f".{redact_key(key[:_PATH_KEY_CHARS])}")
    return root + "".join(reversed(parts))


# The verdicts on values that repeat from event to event (a journey's references, sites, services, counters,
# sources): a dict lookup instead of the patterns. Bounded: emptied whole when full, then refilled by the
# values that do repeat.
_VERDICTS_KEPT = 8192
_verdicts: dict[str, bool] = {}


def _identifier_looks_personal(value: str) -> bool:
    verdict = _verdicts.get(value)
    if verdict is None:
        if len(_verdicts) >= _VERDICTS_KEPT:
            _verdicts.clear()
        verdict = _verdicts[value] = looks_personal_identifier(value)
    return verdict


def _personal_values(event: CloudEvent) -> list[str]:
    """The fields of a decoded event whose values look personal: ids, references, codes and the free text of
    a command's error. Every string of a canonical event is one of these, bounded in length by its pattern.
    An event's id is unique, so it alone is checked without the verdicts kept."""
    found = ["$.id"] if looks_personal_identifier(event.id) else []
    if event.subject and _identifier_looks_personal(event.subject):
        found.append("$.subject")
    if (path := event.source.partition("/")[2].partition("/")[2]) and _identifier_looks_personal(path):
        found.append("$.source")
    data = event.data
    for name in data.__struct_fields__:
        value = getattr(data, name)
        if type(value) is str:  # as decoded: never a subclass; the exact test is the cheaper one per event
            if _identifier_looks_personal(value) or (name == "error" and looks_personal(value)):
                found.append(f"$.data.{name}")
        elif type(value) is list:
            for i, item in enumerate(value):
                if type(item) is str and _identifier_looks_personal(item):
                    found.append(f"$.data.{name}[{i}]")
    return found


def _field_names(cls: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(f.encode_name for f in msgspec.structs.fields(cls))


def _data_type(cls: type[CloudEvent]) -> type[msgspec.Struct]:
    return next(f.type for f in msgspec.structs.fields(cls) if f.name == "data")


# per event type: the envelope's field names and its data's field names
_KNOWN = {name: (_field_names(cls) | {"type"}, _field_names(_data_type(cls)))
          for name, cls in EVENT_TYPES.items()}
# an event of no known type is still read as an envelope: its id, source and subject by an identifier's rules
_ENVELOPE = _field_names(CloudEvent) | {"type"}


def _unreadable(body: bytes, reason: str) -> Rejected:
    """A message that cannot be read as an event; `pii_rejected` (so that it is erased from its stream)
    when its raw text looks personal, whatever its structure."""
    personal = looks_personal(body.decode("utf-8", "replace"))
    return Rejected(kind="pii_rejected" if personal else "invalid_event",
                    reason=f"{reason}; it holds personal data" if personal else reason,
                    payload=_opaque_payload(body))


def _opaque_payload(body: bytes) -> dict[str, Any]:
    return {
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "excerpt": excerpt(body[:512 + 1024].decode("utf-8", "replace"), 512),
    }


class _FoundBy(TypedDict):
    system: str | None
    site: str | None
    subject: str | None
    event_source: str | None
    event_id: str | None
    event_type: str | None


def _envelope_context(doc: dict[str, Any]) -> _FoundBy:
    """The columns a failure is found by, each dropped whole when it looks personal."""
    def text(key: str, container: Any = doc) -> str | None:
        value = container.get(key) if isinstance(container, dict) else None
        return scrub_identifier(excerpt(value, 200)) if isinstance(value, str) else None

    source = text("source")
    return {
        "system": source.split("/")[1] if source and source.startswith("/") else None,
        "site": _site_or_none(text("site", doc.get("data"))),
        "subject": text("subject"),
        "event_source": source,
        "event_id": text("id"),
        "event_type": text("type"),
    }


def _site_or_none(value: str | None) -> str | None:
    """A site as events name one, or none: a message that does not decode files its failure at no site
    rather than at whatever it says (`*`, the live hub's mark for every site, above all)."""
    try:
        return msgspec.convert(value, Code | None)
    except msgspec.ValidationError:
        return None


def _error_reason(exc: Exception) -> str:
    """msgspec's message without the values it quotes (`Invalid value 'Jane Doe' - at $.type`): a value
    refused for its shape may be anything, a name too, which no pattern finds; the payload keeps it,
    redacted."""
    return scrub(_QUOTED.sub("'…'", str(exc)))


def too_deep(value: Any) -> bool:
    """Whether `value` nests more than an event may; read level by level, without recursion."""
    level, layer = 0, [value]
    while layer:
        level += 1
        if level > MAX_DEPTH:
            return True
        layer = [child for item in layer if isinstance(item, dict | list)
                 for child in (item.values() if isinstance(item, dict) else item)]
    return False


def _slow_path(body: bytes, first_error: Exception) -> Accepted | Rejected:
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        return _unreadable(body, f"malformed JSON: {exc}")
    except UnicodeDecodeError as exc:
        return _unreadable(body, f"not valid UTF-8 (byte {exc.start})")
    except RecursionError:
        doc = body  # nested beyond the decoder's own limit: refused below, unread
    if isinstance(doc, bytes) or too_deep(doc):
        return Rejected(kind="invalid_event", reason=f"nested more than {MAX_DEPTH} levels deep",
                        payload=_opaque_payload(body))
    if not isinstance(doc, dict):
        return Rejected(kind="invalid_event", reason="an event must be a JSON object",
                        payload=_opaque_payload(body))
    context = _envelope_context(doc)
    type_ = doc.get("type")
    known = _KNOWN.get(type_) if isinstance(type_, str) else None
    envelope_known, data_known = known if known else (_ENVELOPE, frozenset())
    data = doc.get("data")
    personal = _personal_paths(data, data_known) if isinstance(data, dict | list) else []
    personal += _personal_known_values(doc, envelope_known, data_known)
    # fields beside the envelope's, by name or by content: dropped, but the message stays in its stream
    personal += _personal_paths({k: v for k, v in doc.items() if k not in envelope_known and k != "data"},
                                frozenset(), root="$")
    if personal:
        return Rejected(kind="pii_rejected", reason="personal data refused at " + ", ".join(personal[:10]),
                        payload=redact(doc), **context)
    if known is None:
        return Rejected(kind="invalid_event", reason=_error_reason(first_error), payload=redact(doc),
                        **context)
    cleaned = {k: v for k, v in doc.items() if k in envelope_known or k == "data"}
    dropped = len(doc) - len(cleaned)
    if isinstance(data, dict):
        cleaned["data"] = {k: v for k, v in data.items() if k in data_known}
        dropped += len(data) - len(cleaned["data"])
    try:
        event = msgspec.convert(cleaned, Event)
    except msgspec.ValidationError as exc:
        return Rejected(kind="invalid_event", reason=_error_reason(exc), payload=redact(doc), **context)
    return Accepted(event, dropped)


# Times Switchboard stores and reads back: Postgres would keep year 1 with an offset as a date BC, and a time
# past year 9999 in UTC, neither of which Python can read again.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def _time_error(event: CloudEvent) -> str | None:
    for name, moment in (("time", event.time), ("data.slot_start", getattr(event.data, "slot_start", None))):
        if moment is not None and not _EARLIEST <= moment < _LATEST:
            return f"{name} {moment.isoformat()} is outside the years 1970 to 2999"
    return None


def _semantic_error(event: CloudEvent) -> str | None:
    if problem := _time_error(event):
        return problem
    match event.kind:
        case "journey":
            if event.subject.startswith(("site:", "connector:")):
                return f"a {event.type} event needs a journey reference as subject, not {event.subject!r}"
        case "capacity":
            if event.subject != f"site:{event.data.site}":
                return "a capacity.changed event's subject must be site:<data.site>"
        case "heartbeat":
            if not event.subject.startswith("connector:"):
                return "a connector.heartbeat event's subject must be connector:<name>"
    return None


def rejected_event(event: CloudEvent, kind: FailureKind, reason: str, scope: str | None = None) -> Rejected:
    """A failure for an event that decoded but may not be applied; a column that looks personal is dropped.

    An event found free of personal data keeps its codes as they were judged, so that a retry applies what
    was sent (free text's rules would take a ticket number's ten digits for a phone number); one refused for
    personal data is never retried and keeps the stricter rules."""
    return Rejected(
        kind=kind, reason=excerpt(reason, 1000),
        payload=redact(msgspec.to_builtins(event), codes=kind != "pii_rejected"),
        system=event.system,
        site=scrub_identifier(getattr(event.data, "site", None)), subject=scrub_identifier(event.subject),
        event_source=scrub_identifier(event.source), event_id=scrub_identifier(event.id),
        event_type=event.type, sender_sites=None if scope is None else (scope,),
    )


def _trust_error(event: CloudEvent, trust: Trust) -> tuple[FailureKind, str] | None:
    """An event dated in the future, or about another system's journey than its sender may speak for."""
    if event.time.timestamp() - time.time() > trust.max_future_s:
        return "invalid_event", f"dated more than {trust.max_future_s:g}s in the future"
    if event.kind == "journey" and event.system not in RESERVED_SYSTEMS:
        owner = event.subject.partition(":")[0]
        if owner != event.system and owner not in trust.acts_for.get(event.system, ()):
            return "unauthorized_source", (f"/{event.system} may not speak for {owner}'s references"
                                           " (SWITCHBOARD_ACTS_FOR)")
    return None


def _judged(check: Callable[Concatenate[bytes, _P], Accepted | Rejected],
            ) -> Callable[Concatenate[bytes, _P], Accepted | Rejected]:
    """`check`, refusing a message it breaks on instead of losing it (an exception would leave the message
    unrecorded: a crashed fetcher, a 500). Every refusal of a message from a sender limited to sites names
    them, however early it was refused: a retry applies it at those sites alone."""

    @functools.wraps(check)
    def judged(body: bytes, *args: _P.args, **kwargs: _P.kwargs) -> Accepted | Rejected:
        try:
            result = check(body, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - said in the failure and the log, below
            # where, not what: the exception's text may quote the message
            where = traceback.extract_tb(exc.__traceback__)[-1]
            log.error("an event could not be validated: %s at %s:%s", type(exc).__name__, where.filename,
                      where.lineno)
            result = _unreadable(body, f"could not be validated ({type(exc).__name__})")
        sites: frozenset[str] | None = kwargs.get("allowed_sites")  # type: ignore[assignment]
        if not isinstance(result, Rejected) or sites is None:
            return result
        if result.sender_sites is None:
            result = msgspec.structs.replace(result, sender_sites=tuple(sorted(sites)))
        if result.site not in sites:
            # kept where its sender may act, not at the site it claims: a connector limited to one site must
            # not fill another site's failures (and their alerts); with several sites, at none (all-site
            # readers)
            only = scrub_identifier(next(iter(sites))) if len(sites) == 1 else None
            result = msgspec.structs.replace(result, site=only)
        return result

    return judged


@_judged
def validate(
    body: bytes,
    *,
    max_bytes: int,
    known_systems: frozenset[str],
    subject_system: str | None = None,
    subject_type: str | None = None,
    allowed_system: str | None = None,
    allowed_sites: frozenset[str] | None = None,
    from_outside: bool = False,
    signed_by_backend: bool = False,
    trust: Trust = DEFAULT_TRUST,
) -> Accepted | Rejected:
    """Validate one message.

    `subject_system`/`subject_type` come from the NATS subject it arrived on; `allowed_system` and
    `allowed_sites` from the token of a connector publishing over HTTP. `from_outside`: it came over HTTP
    (ingest, webhooks), where Switchboard's own sources (`manual`, `switchboard`) are never accepted,
    whatever the token: only the backend publishes them (and NATS permissions keep connectors off
    `svc.events.manual.>` and `svc.events.switchboard.>`). `signed_by_backend` says the message carries
    a backend's signature (`backend.ingest.own_events`), without which no event may come from a reserved
    system. An event within `allowed_sites` is accepted (or refused) for its site alone: its `scope`.
    `trust` bounds an event's date and the journeys its sender may speak about.
    """
    if len(body) > max_bytes:
        # not scanned for personal data (a megabyte takes a quarter second): refused unread and not kept
        return Rejected(kind="invalid_event", payload=_opaque_payload(body), unread=True,
                        reason=f"event of {len(body)} bytes exceeds the {max_bytes}-byte limit: refused"
                               " unread, and not kept")
    try:
        result: Accepted | Rejected = Accepted(_decoder.decode(body))
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        result = _slow_path(body, exc)
    if isinstance(result, Rejected):
        return result
    event = result.event
    site = getattr(event.data, "site", None)
    # a sender limited to sites speaks for the one its event names, and only for it (a retry too); a
    # heartbeat names none, and is filed under its sender's first (`<name>@<site>`: never another's)
    scope = site if allowed_sites is not None and site in allowed_sites else None
    if allowed_sites and event.kind == "heartbeat":
        scope = min(allowed_sites)

    def reject(kind: FailureKind, reason: str) -> Rejected:
        return rejected_event(event, kind, reason, scope)
    if personal := _personal_values(event):
        return reject("pii_rejected", "personal data refused at " + ", ".join(personal[:_REASON_PATHS]))
    # who may send it first: those refusals are never retried, and a retry is validated without the
    # transport, so an event its sender could not send must never be stored as a retryable failure
    system = event.system
    if system not in known_systems:
        return reject("unauthorized_source", f"system {system!r} is not registered")
    if from_outside and system in RESERVED_SYSTEMS:
        return reject("unauthorized_source", f"only Switchboard itself publishes events from /{system}")
    if system in RESERVED_SYSTEMS and not signed_by_backend:
        return reject("unauthorized_source", f"only Switchboard itself publishes as /{system}")
    if subject_system is not None and subject_system != system:
        return reject("source_mismatch",
                      f"published on svc.events.{subject_system}.* but source is {event.source}")
    if allowed_system is not None and allowed_system != system:
        return reject("unauthorized_source",
                      f"a connector of {allowed_system!r} may not publish for {system!r}")
    if allowed_sites is not None and site is not None and site not in allowed_sites:
        return reject("unauthorized_source", f"the token does not cover site {site!r}")  # filed by `_judged`
    if allowed_sites is not None and site is None and isinstance(event, CommandResult):
        return reject("unauthorized_source", "an answer from a connector limited to sites names its site")
    if problem := _semantic_error(event):
        return reject("invalid_event", problem)
    if subject_type is not None and subject_type != event.type:
        if subject_type == "connector.heartbeat":
            # the one subject a site-limited connector publishes on without its site token, so its sites were
            # not checked: refused for good (a retry, without the subject, would apply it), at no site
            return msgspec.structs.replace(
                reject("unauthorized_source", f"published as connector.heartbeat but type is {event.type}"),
                site=None)
        return reject("invalid_event", f"published as {subject_type} but type is {event.type}")
    if refused := _trust_error(event, trust):
        return reject(*refused)
    return result if scope is None else msgspec.structs.replace(result, scope=scope)
