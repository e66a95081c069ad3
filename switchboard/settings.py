"""Settings from the environment (and an optional `.env`), read once per process.

Each package declares the section of the settings it uses beside its code (a frozen Struct of defaults);
every section shares the `SWITCHBOARD_<FIELD>` names. The sections here are the kernel's: what several
processes share. A process gathers the sections it needs into one Struct (`backend.settings.BackendSettings`,
`dashboard.settings.DashboardSettings`) read with `load_settings`.
"""

from __future__ import annotations

import functools
import os
import typing
from typing import TypeVar

import msgspec
from dotenv import load_dotenv


class DatabaseSection(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    # the role that owns the tables, for migrations (`switchboard migrate`; the backend at start when set).
    # Unset, the backend migrates as database_url's role (docs/security.md: production keeps them apart)
    database_owner_url: str | None = None


class BusSection(msgspec.Struct, frozen=True, kw_only=True):
    nats_url: str | None = None
    # the NATS credentials file (CONTRACT section 8): a user .creds file, a bare nkey seed or a token
    nats_creds: str | None = None
    # the certificate authority of the NATS servers' certificates (a PEM file): set, every connection is TLS
    # from its first byte, and the servers must say `tls { handshake_first: true }` (docs/security.md)
    nats_tls_ca: str | None = None


class TokenSection(msgspec.Struct, frozen=True, kw_only=True):
    """The HS256 bearer tokens (switchboard/tokens.py): the backend checks them, the CLI, the demo and the
    dashboard's demo sign-in mint them."""

    jwt_secret: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # this machine's local state: the JWT secret generated when none is set, connectors' spools, the demo
    data_dir: str = ".switchboard"


class LogSection(msgspec.Struct, frozen=True, kw_only=True):
    log_level: str = "INFO"
    # `json`: one JSON object per line, tokens and personal data scrubbed (switchboard/logs.py); `text` to
    # read by eye
    log_format: str = "json"


class TracingSection(msgspec.Struct, frozen=True, kw_only=True):
    # traces (switchboard/tracing.py): `none`, `console` (spans as JSON lines on stderr) or `otlp` (OTLP/HTTP
    # to otel_endpoint; needs the opentelemetry-exporter-otlp-proto-http package); connectors sample new
    # traces at otel_sample_ratio, everything downstream follows their decision
    otel_exporter: str = "none"
    otel_endpoint: str = ""
    otel_sample_ratio: float = 1.0


_ENV_PREFIX = "SWITCHBOARD_"
SectionT = TypeVar("SectionT", bound=msgspec.Struct)


def _is_list(annotation: object) -> bool:
    return typing.get_origin(annotation) is tuple or annotation is tuple


def _from_env(section: type[msgspec.Struct]) -> dict[str, object]:
    """Each field from `SWITCHBOARD_<FIELD>`; a tuple field from a comma-separated list."""
    hints = typing.get_type_hints(section)
    values: dict[str, object] = {}
    for field in msgspec.structs.fields(section):
        raw = os.environ.get(_ENV_PREFIX + field.name.upper())
        if raw is None or raw == "":
            continue
        values[field.name] = tuple(s.strip() for s in raw.split(",") if s.strip()) \
            if _is_list(hints[field.name]) else raw
    return values


@functools.cache
def load_section(section: type[SectionT]) -> SectionT:
    """One package's section of the settings, read once per process."""
    load_dotenv(override=False)
    return msgspec.convert(_from_env(section), section, strict=False)


def sections_of(settings: type[msgspec.Struct]) -> dict[str, type[msgspec.Struct]]:
    """The sections a process's settings gather, by attribute name."""
    hints = typing.get_type_hints(settings)
    return {field.name: hints[field.name] for field in msgspec.structs.fields(settings)}


@functools.cache
def load_settings(settings: type[SectionT]) -> SectionT:
    """A process's settings (a Struct whose every field is a section), each section read once."""
    return settings(**{name: load_section(section) for name, section in sections_of(settings).items()})
