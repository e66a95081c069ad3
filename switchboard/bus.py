"""One way for every Switchboard process to connect to NATS, with its credentials (CONTRACT section 8).

`SWITCHBOARD_NATS_CREDS` names a file holding a NATS user credentials file (user JWT and nkey seed),
a bare nkey seed, or a token; unset, the connection is anonymous (a server without auth).
`SWITCHBOARD_NATS_TLS_CA` names the certificate authority that signs the servers' certificates: set, every
connection is TLS from its first byte (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NATS

log = logging.getLogger(__name__)
_JWT_MARK = "-----BEGIN NATS USER JWT-----"


def credential_options(creds: str | None) -> dict[str, Any]:
    """nats-py connect options for the credentials file at `creds` (none when unset)."""
    if not creds:
        return {}
    text = Path(creds).read_text().strip()
    if _JWT_MARK in text:
        return {"user_credentials": creds}
    if text.startswith("SU") and len(text.split()) == 1:
        return {"nkeys_seed_str": text}
    if not text:
        raise ValueError(f"the NATS credentials file {creds} is empty")
    return {"token": text}


def tls_options(tls_ca: str | None) -> dict[str, Any]:
    """nats-py connect options for TLS with the servers' authority at `tls_ca` (none when unset).

    The handshake comes first, before the server's INFO: a client that waited for INFO to ask for TLS
    would go on in plain text with a server (or anyone in between) that never asks. The servers need
    `tls { handshake_first: true }`.
    """
    if not tls_ca:
        return {}
    return {"tls": ssl.create_default_context(cafile=tls_ca), "tls_handshake_first": True}


async def connect(url: str, name: str, *, creds: str | None = None, tls_ca: str | None = None,
                  reconnect: bool = True,
                  inbox_prefix: str | None = None, on_reconnected: Callable[[], None] | None = None,
                  **options: Any) -> NATS:
    """A client that reconnects for ever (unless `reconnect` is False), logging an outage once;
    `on_reconnected` is told when it is back (what core NATS sent meanwhile is gone). `tls_ca`: the
    servers' authority (SWITCHBOARD_NATS_TLS_CA), for TLS.

    `url` may list several servers of a cluster, comma-separated.
    """

    async def on_error(exc: Exception) -> None:
        # a server down is an outage, logged once below; a certificate refused is a misconfiguration
        quiet = isinstance(exc, OSError | nats.errors.StaleConnectionError | nats.errors.UnexpectedEOF) \
            and not isinstance(exc, ssl.SSLError)
        log.log(logging.DEBUG if quiet else logging.WARNING, "nats (%s): %s", name, exc or type(exc).__name__)

    async def on_disconnected() -> None:
        if not client.is_closed:
            log.warning("nats (%s): disconnected; reconnecting", name)

    async def reconnected() -> None:
        log.warning("nats (%s): reconnected", name)
        if on_reconnected is not None:
            on_reconnected()

    client = NATS()
    settings: dict[str, Any] = {"max_reconnect_attempts": -1, "reconnect_time_wait": 0.5} if reconnect \
        else {"max_reconnect_attempts": 0, "allow_reconnect": False}
    if inbox_prefix:
        settings["inbox_prefix"] = inbox_prefix
    callbacks = {"error_cb": on_error, "disconnected_cb": on_disconnected, "reconnected_cb": reconnected}
    try:
        await client.connect([u.strip() for u in url.split(",")], name=name,
                             **{**callbacks, **settings, **credential_options(creds), **tls_options(tls_ca),
                                **options})
    except BaseException:
        # a refused connection (credentials, authorization) leaves nats-py's transport open otherwise; after
        # a failed TLS handshake its wait for the socket to close never ends, so it is bounded
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await client.close()
        raise
    return client
