"""Runs a `Connector`: spool and publisher, heartbeats, the snapshot responder and the command consumer.

The spool opens first, so the connector can emit before NATS is reachable; the NATS side
connects in the background and keeps reconnecting. Commands come from a durable pull consumer
per system on SVC_COMMANDS, and for a connector limited to sites of a system commanded per site from its
sites' consumers; each is acknowledged only after its `command.result` is spooled, so a crash between the
two redelivers the command and the same result id is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ServiceUnavailableError
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from connectors.sdk.connector import Connector, Outcome, Unavailable
from connectors.sdk.publisher import Publisher
from connectors.sdk.spool import Spool
from switchboard import bus
from switchboard.commands import (
    COMMANDS_STREAM,
    PER_SITE_METADATA,
    command_result_id,
    consumer_name,
    decode_command,
)
from switchboard.events import CloudEvent, Code, EventId, nats_msg_id, nats_subject
from switchboard.natsauth import inbox_prefix
from switchboard.privacy import looks_personal
from switchboard.snapshots import BAD_REQUEST, UNAVAILABLE, SnapshotPage, decode_request, snapshot_subject
from switchboard.waits import stop_tasks

log = logging.getLogger(__name__)
_OTHER_SITE_MAX_DELAY_S = 30
_SITE_CONSUMER_MAX_WAIT_S = 30.0
_encode = msgspec.json.Encoder().encode


class _SpoolEmitter:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def emit(self, events: Sequence[CloudEvent]) -> None:
        await self.publisher.emit(events)

    def emit_raw(self, rows: Sequence[tuple[str, str, bytes]]) -> None:
        self.publisher.emit_raw(rows)


class ConnectorSection(msgspec.Struct, frozen=True, kw_only=True):
    # a connector profile limited to sites (`switchboard connector profile --site`): the sites it may publish
    # for
    connector_sites: tuple[str, ...] = ()
    # its reply inbox prefix, which such a profile names: one of its sites' own (switchboard/natsauth.py)
    connector_inbox: str | None = None


class ConnectorRuntime:
    def __init__(self, connector: Connector, *, nats_url: str, data_dir: Path,
                 heartbeat_interval: float = 5.0,
                 max_in_flight: int = 1000, creds: str | None = None, tls_ca: str | None = None,
                 sites: Sequence[str] = (), inbox: str | None = None) -> None:
        """`creds`: its NATS credentials file (a connector profile's SWITCHBOARD_NATS_CREDS); `tls_ca`: the
        NATS servers' certificate authority (its SWITCHBOARD_NATS_TLS_CA), for TLS; `inbox`: the reply inbox
        prefix its profile names (SWITCHBOARD_CONNECTOR_INBOX; by default its system's); `sites`: the
        sites its profile is limited to, whose events then carry their site as the subject's last token, and
        whose snapshot requests are the only ones it answers."""
        self.connector = connector
        self.sites = tuple(sites)
        self.nats_url = nats_url
        self.creds = creds
        self.tls_ca = tls_ca
        self.inbox = inbox or inbox_prefix(connector.system)
        # a profile limited to sites names its own inbox since it may also read its sites' command consumers;
        # one issued before (no inbox) may not, and keeps its system's inbox
        self.site_consumers = bool(sites) and inbox is not None
        self.heartbeat_interval = heartbeat_interval
        self.spool = Spool(Path(data_dir) / f"spool-{connector.name}.sqlite")
        self.publisher = Publisher(self.spool, max_in_flight=max_in_flight, sites=tuple(sites))
        self.nc: NATS | None = None
        self.commands_answered = 0
        self._service: Service | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # nats-py can turn a cancellation inside a request into its own timeout error; the loops
        # below also stop on this flag so such a swallowed cancellation cannot keep them alive
        self._stopping = False
        self.ready = asyncio.Event()  # set once snapshots are served and commands consumed

    async def __aenter__(self) -> ConnectorRuntime:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.connector.emitter = _SpoolEmitter(self.publisher)
        name = self.connector.name
        self._tasks = [
            asyncio.create_task(self.publisher.run(), name=f"{name}-publish"),
            asyncio.create_task(self._connect_and_serve(), name=f"{name}-serve"),
        ]
        await self.connector.start()

    async def stop(self, drain_timeout: float = 2.0) -> None:
        await self.connector.stop()
        if self.nc is not None and self.nc.is_connected:
            await self.publisher.drain(drain_timeout)  # what is left stays spooled for the next start
        self._stopping = True
        await stop_tasks(self._tasks)
        if self._service is not None:
            with contextlib.suppress(Exception):
                await self._service.stop()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.spool.close()

    async def _connect_and_serve(self) -> None:
        while self.nc is None and not self._stopping:
            try:
                # a cluster's URLs, comma-separated: any one that answers will do. Replies come to an
                # inbox of its own system (or of its sites), the only one its credentials let it read
                self.nc = await bus.connect(self.nats_url, f"switchboard-connector-{self.connector.name}",
                                            creds=self.creds, tls_ca=self.tls_ca,
                                            inbox_prefix=self.inbox,
                                            connect_timeout=2)
            except Exception as exc:  # noqa: BLE001 - unreachable at start: events wait in the spool
                log.warning("NATS unreachable (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
        if self.nc is None:
            return
        self.publisher.attach(self.nc)
        system = self.connector.system
        self._service = await add_service(self.nc, name=f"switchboard-{system}",
                                          version=self.connector.version,
                                          description=f"snapshots of {system}")
        # limited to sites: each site's subject; otherwise every site's and the contract's first form
        subjects = ([snapshot_subject(system, site) for site in self.sites] if self.sites
                    else [snapshot_subject(system), snapshot_subject(system, ">")])
        for n, subject in enumerate(subjects):
            await self._service.add_endpoint(name=f"snapshot-{n}", subject=subject,
                                             handler=self._answer_snapshot)
        await asyncio.gather(self._heartbeats(), self._consume_commands())

    # --- heartbeats -----------------------------------------------------------------------------

    async def heartbeat(self) -> CloudEvent:
        connector = self.connector
        return connector.event("connector.heartbeat", f"connector:{connector.name}",
                               {"upstream": await connector.upstream_status(), "version": connector.version})

    async def _heartbeats(self) -> None:
        """Straight to JetStream, not spooled: a heartbeat is worth something only when it is fresh."""
        assert self.nc is not None
        js = self.nc.jetstream()
        failing = False
        while not self._stopping:
            # the connector's own part (its upstream's status, its version) may fail or hang; the next may not
            try:
                async with asyncio.timeout(self.heartbeat_interval):
                    event = await self.heartbeat()
            except Exception as exc:  # noqa: BLE001 - a missed heartbeat is what down looks like
                if not failing:  # the type only, once a run of failures: its text may hold a URL
                    log.warning("%s: no heartbeat made (%s)", self.connector.name, type(exc).__name__)
                failing = True
            else:
                failing = False
                await self._send_heartbeat(js, event)
            await asyncio.sleep(self.heartbeat_interval)

    async def _send_heartbeat(self, js: JetStreamContext, event: CloudEvent) -> None:
        try:
            # limited to sites: on its first site's subject, the only heartbeat subject its profile allows
            subject = nats_subject(event, site=self.sites[0] if self.sites else None)
            await js.publish(subject, _encode(event), timeout=self.heartbeat_interval,
                             headers={"Nats-Msg-Id": nats_msg_id(event.source, event.id)})
        except Exception as exc:  # noqa: BLE001 - a missed heartbeat is what down looks like
            log.debug("heartbeat not sent: %s", type(exc).__name__)

    # --- snapshots ------------------------------------------------------------------------------

    async def _answer_snapshot(self, request: Request) -> None:
        try:
            ask = decode_request(request.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            await request.respond_error(BAD_REQUEST, str(exc)[:200])
            return
        asked_at = request.subject.removeprefix(snapshot_subject(self.connector.system)).removeprefix(".")
        if (asked_at and asked_at != ask.site) or (self.sites and ask.site not in self.sites):
            await request.respond_error(BAD_REQUEST, f"not a request this connector answers: site {ask.site}"
                                                     f" on {request.subject}")
            return
        try:
            records = await (self.connector.snapshot(ask.site, ask.day) if ask.refs is None
                             else self.connector.lookup(ask.site, ask.day, ask.refs))
        except Unavailable as exc:
            await request.respond_error(UNAVAILABLE, str(exc)[:200] or "upstream unavailable")
            return
        ordered = sorted((r for r in records if ask.cursor is None or r.ref > ask.cursor),
                         key=lambda r: r.ref)
        page = ordered[: ask.limit]
        next_cursor = page[-1].ref if len(ordered) > ask.limit else None
        await request.respond(_encode(SnapshotPage(system=self.connector.system, site=ask.site, day=ask.day,
                                                   records=page, next_cursor=next_cursor,
                                                   as_of=datetime.now(UTC))))

    # --- commands -------------------------------------------------------------------------------

    async def _consume_commands(self) -> None:
        assert self.nc is not None
        js = self.nc.jetstream()
        system = self.connector.system
        bound = await self._bind(js, consumer_name(system))
        if bound is None:
            return
        subscription, per_site = bound
        self.ready.set()
        if self.sites and not self.site_consumers:
            log.warning("%s: its profile, limited to sites, predates commands by site (no inbox of its own):"
                        " other profiles of its system may read what it pulls; issue it again", system)
        if per_site and not self.site_consumers:
            log.warning("%s is commanded per site (SWITCHBOARD_COMMANDS_PER_SITE): this connector receives"
                        " none of its commands", system)
        # limited to sites: its sites' consumers too, whatever the system's consumer says now (the setting
        # may change while it runs); each site's commands in order, different sites' possibly at once. The
        # backend makes a site's consumer before its first command: asked for every second when the system
        # is commanded per site, else less and less often (up to every 30 s)
        patience = 1.0 if per_site else _SITE_CONSUMER_MAX_WAIT_S
        sites = self.sites if self.site_consumers else ()
        await asyncio.gather(self._serve(js, consumer_name(system), 1.0, subscription),
                             *(self._serve(js, consumer_name(system, site), patience) for site in sites))

    async def _serve(self, js: JetStreamContext, name: str, patience: float,
                     subscription: JetStreamContext.PullSubscription | None = None) -> None:
        """Read the consumer `name`'s commands, binding to it again whenever it goes away."""
        while not self._stopping:
            if subscription is None:
                bound = await self._bind(js, name, patience)
                if bound is None:
                    return
                subscription = bound[0]
            await self._read_commands(subscription)
            subscription = None

    async def _bind(self, js: JetStreamContext, name: str,
                    patience: float = 1.0) -> tuple[JetStreamContext.PullSubscription, bool] | None:
        """A pull subscription to the consumer `name`, once the backend has made it (CONTRACT section 8: a
        connector may only read it), and whether it says its system is commanded per site. Asked for again
        after 1 s, then twice as long each time up to `patience`."""
        wait, waited = 1.0, False
        while not self._stopping:
            try:
                info = await js.consumer_info(COMMANDS_STREAM, name)
                subscription = await js.pull_subscribe_bind(durable=name, stream=COMMANDS_STREAM)
                metadata = info.config.metadata or {}
                return subscription, PER_SITE_METADATA.items() <= metadata.items()
            except (NotFoundError, ServiceUnavailableError, NatsTimeoutError, TimeoutError) as exc:
                if not waited:
                    log.info("%s: waiting for its consumer %s on %s (%s)", self.connector.system, name,
                             COMMANDS_STREAM, type(exc).__name__)
                    waited = True
                await asyncio.sleep(wait)
                wait = min(wait * 2, max(patience, 1.0))
        return None

    async def _read_commands(self, subscription: JetStreamContext.PullSubscription) -> None:
        """Until stopped, or until its consumer is gone (the caller binds again)."""
        while not self._stopping:
            try:
                messages = await subscription.fetch(50, timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                continue
            except (NotFoundError, ServiceUnavailableError) as exc:  # a deleted consumer answers 503
                log.warning("%s: no answer from its consumer (%s); binding to it again",
                            self.connector.system, type(exc).__name__)
                return
            except Exception as exc:  # noqa: BLE001 - reconnecting: the consumer is durable, fetch again
                log.debug("command fetch failed: %s", type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            # in stream order: one consumer's commands (a system's, or one site's of it) are answered in order
            for message in messages:
                if not self._ours(message.data):
                    # the system's connectors share one consumer: another site's command goes back for a
                    # connector of that site (a profile limited to sites may neither do nor answer it), later
                    # each time it comes back, so a site with no connector costs little
                    await message.nak(delay=min(message.metadata.num_delivered, _OTHER_SITE_MAX_DELAY_S))
                    continue
                # restart its ack timer: the ones before it in this batch may have taken their full timeout
                await message.in_progress()
                result = await self.answer(message.data)
                if result is not None:
                    await self.connector.emit(result)
                    self.commands_answered += 1
                await message.ack()

    def _ours(self, body: bytes) -> bool:
        """Whether this connector may do the command: any, unless limited to sites. One whose site cannot be
        read is not (it could not answer it either): the backend's answer timeout makes it a failure."""
        if not self.sites:
            return True
        try:
            return msgspec.json.decode(body, type=_CommandSite).site in self.sites
        except (msgspec.ValidationError, msgspec.DecodeError):
            return False

    async def answer(self, body: bytes) -> CloudEvent | None:
        """The `command.result` for one command message; None when it has no id to answer to."""
        connector = self.connector
        try:
            command = decode_command(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return self._malformed(body, str(exc))
        if command.command not in connector.commands:
            outcome = Outcome("failed", f"unknown command {command.command}")
        elif self.spool.was_done(command.id):
            # done already, its answer late: answered again, not done again (a failed one is tried again)
            outcome = Outcome("ok")
        else:
            try:
                async with asyncio.timeout(connector.handle_timeout):
                    outcome = await connector.handle(command)
            except Unavailable:
                outcome = Outcome("unavailable", "upstream unavailable")
            except TimeoutError:
                outcome = Outcome("unavailable", "upstream did not answer in time")
            except Exception as exc:  # noqa: BLE001 - a handler bug is that command's failure, not the consumer's
                outcome = Outcome("failed", type(exc).__name__)
            if outcome.status == "ok":
                self.spool.remember_done(command.id)
        subject = command.refs[0] if command.refs else f"connector:{connector.name}"
        return self._result(subject, command.id, command_result_id(command), outcome, command.site)

    def _malformed(self, body: bytes, reason: str) -> CloudEvent | None:
        """A command that does not decode is still answered (failed) when it carries a usable id, one answer
        per attempt as for any command."""
        log.warning("malformed command: %s", reason[:200])
        try:
            named = msgspec.json.decode(body, type=_CommandId)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        attempt = named.attempt if isinstance(named.attempt, int) and named.attempt >= 1 else 1
        result_id = f"result-{named.id}-{attempt}"[:128]
        return self._result(f"connector:{self.connector.name}", named.id, result_id,
                            Outcome("failed", "malformed command"), named.site if self.sites else None)

    def _result(self, subject: str, command_id: str, result_id: str, outcome: Outcome,
                site: str | None) -> CloudEvent:
        # the answer's error holds ASCII letters, digits and a few marks only: an upstream's "für" is not;
        # and nothing that reads as personal data, which the backend refuses, losing the answer
        error = None if outcome.error is None else "".join(
            c if (c.isascii() and c.isalnum()) or c in "_.:- " else " " for c in outcome.error)[:200]
        if error is not None and (looks_personal(error) or looks_personal(outcome.error or "")):
            error = "upstream reason withheld: it reads as personal data"
        return self.connector.event("command.result", subject, {
            "command_id": command_id, "status": outcome.status, **({"error": error} if error else {}),
            **({"site": site} if site else {})}, id=result_id)


class _CommandId(msgspec.Struct):
    id: EventId
    attempt: Any = 1  # read loosely: a malformed attempt is still a command to answer (as its first)
    site: Any = None


class _CommandSite(msgspec.Struct):
    site: Code
