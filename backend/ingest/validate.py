"""Turn one message's bytes into a canonical event, or a failure with its reason and a redacted payload.

The common case is one typed decode of the whole message (the tagged union). Only a message that
fails it is parsed generically, to tell personal data (refused whole) from unknown non-personal
fields (dropped and counted) from plain invalid input.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import msgspec

from switchboard.events import EVENT_TYPES, RESERVED_SYSTEMS, CloudEvent, Event

FailureKind = Literal["invalid_event", "pii_rejected", "source_mismatch", "unauthorized_source",
                      "apply_error"]

_decoder = msgspec.json.Decoder(Event)

# Keys of a personal kind, compared lower-cased without separators.
_PII_KEYS = frozenset({
    "name", "firstname", "lastname", "fullname", "surname", "givenname", "familyname", "username",
    "displayname",
    "email", "emailaddress", "mail", "phone", "phonenumber", "mobile", "tel", "telephone", "msisdn",
    "address", "street", "streetaddress", "postcode", "postalcode", "zip", "zipcode",
    "birthdate", "dateofbirth", "dob", "birthday", "nationalid", "ssn", "socialsecuritynumber", "passport",
    "passportnumber", "taxid", "personalnumber", "idnumber", "iban",
    "note", "notes", "comment", "comments", "freetext", "text", "message", "description", "remarks",
})
_PII_KEY_PARTS = ("email", "phone", "birth", "address", "passport", "national", "ssn", "firstname",
                  "lastname")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w\-])\+\d[\d \-]{6,}\d|\b\d{9,}\b")
REDACTED = "[redacted]"
# deeper than any canonical event; deeper documents are refused unread (Postgres' jsonb and recursion have
# limits)
MAX_DEPTH = 32


class Accepted(msgspec.Struct, frozen=True):
    event: CloudEvent
    dropped_fields: int = 0


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


def _is_pii_key(key: str) -> bool:
    folded = re.sub(r"[\s_\-.]", "", key.lower())
    return folded in _PII_KEYS or any(part in folded for part in _PII_KEY_PARTS)


def _looks_personal(value: str) -> bool:
    return bool(_EMAIL.search(value) or _PHONE.search(value))


def scrub(text: str) -> str:
    return _PHONE.sub(REDACTED, _EMAIL.sub(REDACTED, text))


def redact(value: Any) -> Any:
    """A copy with values under personal keys replaced and e-mail/phone-like strings scrubbed."""
    if isinstance(value, dict):
        return {k: REDACTED if _is_pii_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub(value)
    return value


def _personal_paths(value: Any, known: frozenset[str], path: str) -> list[str]:
    """Paths of unknown fields that are personal by name or by content."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{k}"
            if k in known:
                continue
            if _is_pii_key(str(k)) or (isinstance(v, str) and _looks_personal(v)):
                found.append(here)
            else:
                found.extend(_personal_paths(v, frozenset(), here))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, str) and _looks_personal(v):
                found.append(f"{path}[{i}]")
            else:
                found.extend(_personal_paths(v, frozenset(), f"{path}[{i}]"))
    return found


def _field_names(cls: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(f.encode_name for f in msgspec.structs.fields(cls))


def _data_type(cls: type[CloudEvent]) -> type[msgspec.Struct]:
    return next(f.type for f in msgspec.structs.fields(cls) if f.name == "data")


# per event type: the envelope's field names and its data's field names
_KNOWN = {name: (_field_names(cls) | {"type"}, _field_names(_data_type(cls)))
          for name, cls in EVENT_TYPES.items()}


def _opaque_payload(body: bytes) -> dict[str, Any]:
    return {
        "size": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "excerpt": scrub(body[:512].decode("utf-8", "replace")),
    }


def _envelope_context(doc: dict[str, Any]) -> dict[str, str | None]:
    def text(key: str, container: Any = doc) -> str | None:
        value = container.get(key) if isinstance(container, dict) else None
        return value[:200] if isinstance(value, str) else None

    source = text("source")
    return {
        "system": source.split("/")[1] if source and source.startswith("/") else None,
        "site": text("site", doc.get("data")),
        "subject": text("subject"),
        "event_source": source,
        "event_id": text("id"),
        "event_type": text("type"),
    }


def _too_deep(value: Any) -> bool:
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
        return Rejected(kind="invalid_event", reason=f"malformed JSON: {exc}", payload=_opaque_payload(body))
    except RecursionError:
        doc = body  # nested beyond the decoder's own limit: refused below, unread
    if isinstance(doc, bytes) or _too_deep(doc):
        return Rejected(kind="invalid_event", reason=f"nested more than {MAX_DEPTH} levels deep",
                        payload=_opaque_payload(body))
    if not isinstance(doc, dict):
        return Rejected(kind="invalid_event", reason="an event must be a JSON object",
                        payload=_opaque_payload(body))
    context = _envelope_context(doc)
    type_ = doc.get("type")
    known = _KNOWN.get(type_) if isinstance(type_, str) else None
    envelope_known, data_known = known if known else (frozenset(), frozenset())
    data = doc.get("data")
    personal = _personal_paths(data, data_known, "$.data") if isinstance(data, dict | list) else []
    personal += [f"$.{k}" for k in doc if k not in envelope_known and k != "data" and _is_pii_key(k)]
    if personal:
        return Rejected(kind="pii_rejected", reason="personal data refused at " + ", ".join(personal[:10]),
                        payload=redact(doc), **context)
    if known is None:
        return Rejected(kind="invalid_event", reason=str(first_error), payload=redact(doc), **context)
    cleaned = {k: v for k, v in doc.items() if k in envelope_known or k == "data"}
    dropped = len(doc) - len(cleaned)
    if isinstance(data, dict):
        cleaned["data"] = {k: v for k, v in data.items() if k in data_known}
        dropped += len(data) - len(cleaned["data"])
    try:
        event = msgspec.convert(cleaned, Event)
    except msgspec.ValidationError as exc:
        return Rejected(kind="invalid_event", reason=str(exc), payload=redact(doc), **context)
    return Accepted(event, dropped)


def _semantic_error(event: CloudEvent) -> str | None:
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


def rejected_event(event: CloudEvent, kind: FailureKind, reason: str) -> Rejected:
    """A failure for an event that decoded but may not be applied."""
    return Rejected(
        kind=kind, reason=reason[:1000], payload=redact(msgspec.to_builtins(event)), system=event.system,
        site=getattr(event.data, "site", None), subject=event.subject, event_source=event.source,
        event_id=event.id, event_type=event.type,
    )


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
) -> Accepted | Rejected:
    """Validate one message.

    `subject_system`/`subject_type` come from the NATS subject it arrived on; `allowed_system` and
    `allowed_sites` from the token of a connector publishing over HTTP. `from_outside`: it came over HTTP
    (ingest, webhooks), where Switchboard's own sources (`manual`, `switchboard`) are never accepted,
    whatever the token: only the backend publishes them (and NATS permissions keep connectors off
    `svc.events.manual.>` and `svc.events.switchboard.>`). `signed_by_backend` says the message carries
    a backend's signature (`backend.ingest.own_events`), without which no event may come from a reserved
    system.
    """
    if len(body) > max_bytes:
        return Rejected(kind="invalid_event",
                        reason=f"event of {len(body)} bytes exceeds the {max_bytes}-byte limit",
                        payload=_opaque_payload(body))
    try:
        result: Accepted | Rejected = Accepted(_decoder.decode(body))
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        result = _slow_path(body, exc)
    if isinstance(result, Rejected):
        return result
    event = result.event

    def reject(kind: FailureKind, reason: str) -> Rejected:
        return rejected_event(event, kind, reason)
    if problem := _semantic_error(event):
        return reject("invalid_event", problem)
    if event.system not in known_systems:
        return reject("unauthorized_source", f"system {event.system!r} is not registered")
    if from_outside and event.system in RESERVED_SYSTEMS:
        return reject("unauthorized_source", f"only Switchboard itself publishes events from /{event.system}")
    if event.system in RESERVED_SYSTEMS and not signed_by_backend:
        return reject("unauthorized_source", f"only Switchboard itself publishes as /{event.system}")
    if subject_system is not None and subject_system != event.system:
        return reject("source_mismatch",
                      f"published on svc.events.{subject_system}.* but source is {event.source}")
    if subject_type is not None and subject_type != event.type:
        return reject("invalid_event", f"published as {subject_type} but type is {event.type}")
    if allowed_system is not None and allowed_system != event.system:
        return reject("unauthorized_source",
                      f"a connector of {allowed_system!r} may not publish for {event.system!r}")
    site = getattr(event.data, "site", None)
    if allowed_sites is not None and site is not None and site not in allowed_sites:
        return reject("unauthorized_source", f"the token does not cover site {site!r}")
    return result
