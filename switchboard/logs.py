"""Structured logs: one JSON object per line on stderr, for the backend, the dashboard and connectors.

Whatever a log call is given, the line never carries a token or personal data: bearer tokens and
JWT-looking strings are cut, values under personal keys (in `extra` or in dict arguments) and
e-mail/phone-like text are redacted, with the same rules as the event ingest (switchboard/privacy.py).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import msgspec
from opentelemetry import trace

from switchboard.privacy import REDACTED, redact, scrub

# `Bearer <anything>`, and three base64url parts the way a JWT (or a JWS of any kind) looks
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*")
_TOKEN_QUERY = re.compile(r"(?i)([?&](?:token|access_token|secret)=)[^&\s\"']+")
# what every LogRecord has: anything else on a record came in through `extra=`
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message",
                                                                                "asctime", "taskName"}
_encode = msgspec.json.Encoder(enc_hook=str).encode


def clean(text: str) -> str:
    """`text` without tokens, secrets in query strings, e-mail addresses or phone numbers."""
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _TOKEN_QUERY.sub(rf"\1{REDACTED}", text)
    return scrub(text)


def _clean_value(value: Any) -> Any:
    value = redact(value)
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {k: _clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_value(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if isinstance(args, dict):
            args = _clean_value(args)
        elif isinstance(args, tuple):
            args = tuple(_clean_value(a) if isinstance(a, dict | list | tuple | str) else a for a in args)
        try:
            message = record.msg % args if args else str(record.msg)
        except (TypeError, ValueError):  # a bad format string: never let logging print it unscrubbed
            message = f"{record.msg} {args!r}"
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "msg": clean(message),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"], line["span_id"] = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extra:
            line["fields"] = _clean_value(extra)
        if record.exc_info:
            line["exc"] = clean(self.formatException(record.exc_info))
        return _encode(line).decode()


class TextFormatter(logging.Formatter):
    """For reading by eye; scrubbed like the JSON lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return clean(super().format(record))


def configure(level: str, fmt: str) -> None:
    """Route every logger (uvicorn's and NiceGUI's included) through one scrubbing handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "nicegui"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # httpx's INFO line names each request's whole URL: a webhook receiver's path or query may be a credential
    for name in ("httpx", "httpx2"):  # httpx2: Authlib's
        logging.getLogger(name).setLevel(logging.WARNING)
