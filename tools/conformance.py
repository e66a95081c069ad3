"""`switchboard connector check MODULE`: the contract tests, run against any connector.

MODULE names a Python module with `create_connector()` returning a `Connector`. The kit runs it
with the SDK runtime against real NATS JetStream (the configured server, or an embedded one)
and checks what the rest of Switchboard relies on: canonical events with ids and `Nats-Msg-Id`,
heartbeats, paged snapshots, and a `command.result` for every command (and, for a floor command
answered `ok`, the canonical event of what it did on the ticket's reference).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from backend.ingest.validate import Accepted, validate
from backend.messaging import ensure_streams
from connectors.sdk import Connector, ConnectorRuntime
from switchboard import bus
from switchboard.commands import FLOOR_COMMAND_EVENTS, Command, command_result_id, command_subject
from switchboard.events import RESERVED_SYSTEMS, SEED_SYSTEMS, CloudEvent
from switchboard.natsauth import write_secret
from switchboard.snapshots import (
    BAD_REQUEST,
    ERROR_CODE_HEADER,
    SnapshotPage,
    SnapshotRequest,
    decode_page,
    snapshot_subject,
)
from tools.embedded import EmbeddedNats

UNKNOWN_COMMAND = "conformance.unknown"
# what every command carries: what a floor command needs (CONTRACT section 10), harmless to the others
COMMAND_DATA = {"reason_code": "CONFORMANCE", "counter": "CK1", "queue_name": "conformance",
                "outcome": "CONFORMANCE"}


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Observed:
    """Everything the connector published while the kit watched."""

    events: list[CloudEvent] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)  # Nats-Msg-Id → body, to tell resends from reuse


def load_connector(module: str) -> Connector:
    factory: Callable[[], Connector] | None = getattr(importlib.import_module(module), "create_connector",
                                                      None)
    if factory is None:
        raise SystemExit(f"{module} has no create_connector()")
    return factory()


@contextlib.asynccontextmanager
async def nats_server(url: str | None, creds: str | None, data_dir: Path,
                      system: str) -> AsyncIterator[tuple[str, str | None, str | None]]:
    """(URL, the kit's credentials, the connector's): the configured server with `creds` for both (they
    must be a backend's), or an embedded authenticated one where the connector gets a profile of its own."""
    if url:
        yield url, creds, creds
        return
    server = EmbeddedNats(data_dir / "nats")
    server.start()
    assert server.issuer is not None
    connector_creds = write_secret(data_dir / f"{system}.creds", server.issuer.connector_creds(system))
    try:
        yield server.url, server.creds, str(connector_creds)
    finally:
        server.stop()


class Kit:
    def __init__(self, connector: Connector, nc: NATS, *, watch_seconds: float) -> None:
        self.connector = connector
        self.nc = nc
        self.watch_seconds = watch_seconds
        self.observed = Observed()
        self.known_systems = SEED_SYSTEMS | RESERVED_SYSTEMS | {connector.system}

    def on_message(self, msg: Msg) -> None:
        _, _, system, type_ = msg.subject.split(".", 3)
        result = validate(msg.data, max_bytes=64 * 1024, known_systems=self.known_systems,
                          subject_system=system, subject_type=type_, allowed_system=self.connector.system)
        if not isinstance(result, Accepted):
            self.observed.problems.append(f"{msg.subject}: {result.kind}: {result.reason[:200]}")
            return
        event = result.event
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        if msg_id != f"{event.source} {event.id}":
            self.observed.problems.append(f"{msg.subject}: Nats-Msg-Id {msg_id!r} is not '<source> <id>'")
        if msg_id and self.observed.bodies.setdefault(msg_id, msg.data) != msg.data:
            self.observed.problems.append(f"id {event.id} was reused for a different event")
        self.observed.events.append(event)

    async def watch(self, at_least: float = 1.5) -> None:
        """Watch for `at_least` seconds, then until a journey event (the snapshot check asks for its site)
        and a heartbeat came, `watch_seconds` at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.watch_seconds
        await asyncio.sleep(min(at_least, self.watch_seconds))
        while loop.time() < deadline and not (any(e.kind == "journey" for e in self.observed.events)
                                              and self.events_of("connector.heartbeat")):
            await asyncio.sleep(0.1)

    def _journey_events(self) -> list[CloudEvent]:
        return [e for e in self.observed.events if e.type not in ("connector.heartbeat", "command.result")]

    def events_of(self, type_: str) -> list[CloudEvent]:
        return [e for e in self.observed.events if e.type == type_]

    def check_events(self) -> Check:
        journey = self._journey_events()
        if self.observed.problems:
            return Check("events", False, "; ".join(self.observed.problems[:5]))
        if not journey:
            return Check("events", False,
                         f"no events in {self.watch_seconds:.0f}s: give the connector upstream activity")
        types = sorted({e.type for e in journey})
        return Check("events", True,
                     f"{len(journey)} valid events ({', '.join(types)}), Nats-Msg-Id '<source> <id>'")

    def check_heartbeats(self) -> Check:
        beats = self.events_of("connector.heartbeat")
        if not beats:
            return Check("heartbeats", False, "no connector.heartbeat seen")
        wrong = [b.subject for b in beats if b.subject != f"connector:{self.connector.name}"]
        if wrong:
            return Check("heartbeats", False, f"heartbeat subject {wrong[0]} is not connector:<name>")
        return Check("heartbeats", True, f"{len(beats)} heartbeats, upstream {beats[-1].data.upstream}")

    async def check_snapshots(self) -> Check:
        system = self.connector.system
        # the sites of journey events: a capacity event names a site that may hold no record yet
        sites = sorted({e.data.site for e in self.observed.events if e.kind == "journey"})
        if not sites:
            return Check("snapshots", False, "no site seen in the events to ask a snapshot for")
        site, today = sites[0], datetime.now(UTC).date()
        try:
            whole = await self._page(SnapshotRequest(site=site, day=today, limit=1000))
            paged, cursor, pages = [], None, 0
            while True:
                page = await self._page(SnapshotRequest(site=site, day=today, cursor=cursor, limit=3))
                pages += 1
                if len(page.records) > 3:
                    return Check("snapshots", False, f"a page of limit 3 held {len(page.records)} records")
                paged.extend(page.records)
                cursor = page.next_cursor
                if cursor is None or pages > 10_000:
                    break
        except (msgspec.ValidationError, msgspec.DecodeError, RuntimeError) as exc:
            return Check("snapshots", False, str(exc)[:300])
        refs = [r.ref for r in paged]
        problems = []
        if refs != sorted(refs) or len(set(refs)) != len(refs):
            problems.append("pages are not in ref order without repeats")
        if {r.ref for r in whole.records} - set(refs):  # records only ever get added while we page
            problems.append("paging by 3 missed records that one page held")
        if any(not ref.startswith(f"{system}:") for ref in refs):
            problems.append(f"a record ref is not {system}:<id>")
        if any(r.site != site for r in paged):
            problems.append("a record of another site")
        if not refs:
            problems.append(f"no records for site {site} today although events were sent for it")
        reply = await self.nc.request(snapshot_subject(system), b"{not json", timeout=5)
        if (reply.headers or {}).get(ERROR_CODE_HEADER) != BAD_REQUEST:
            problems.append("a malformed request was not answered with error 400")
        if problems:
            return Check("snapshots", False, "; ".join(problems))
        return Check("snapshots", True,
                     f"{len(refs)} records of {site} in {pages} pages of 3, as many as one page held")

    async def _page(self, request: SnapshotRequest) -> SnapshotPage:
        reply = await self.nc.request(snapshot_subject(self.connector.system), msgspec.json.encode(request),
                                      timeout=10)
        if code := (reply.headers or {}).get(ERROR_CODE_HEADER):
            raise RuntimeError(f"snapshot answered error {code}:"
                               f" {(reply.headers or {}).get('Nats-Service-Error')}")
        return decode_page(reply.data)

    async def check_commands(self) -> Check:
        system = self.connector.system
        js = self.nc.jetstream()
        refs = [e.subject for e in self.observed.events if e.subject.startswith(f"{system}:")][:1] or [
            f"{system}:CONFORMANCE-1"]
        site = next((s for e in self.observed.events if (s := getattr(e.data, "site", None))), "conformance")
        sent: list[Command] = []
        for name in [*sorted(self.connector.commands), UNKNOWN_COMMAND]:
            command = Command(id=uuid.uuid4().hex, system=system, command=name, journey_id=uuid.uuid4(),
                              refs=refs,
                              site=site, data=COMMAND_DATA, created_at=datetime.now(UTC))
            sent.append(command)
        sent.append(msgspec.structs.replace(sent[0], attempt=2))  # a retry is a new attempt, answered again
        sent_at = datetime.now(UTC)
        for command in sent:
            await js.publish(command_subject(command), msgspec.json.encode(command),
                             headers={"Nats-Msg-Id": f"{command.id}-{command.attempt}"})
        wanted = {command_result_id(c): c for c in sent}
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            results = {e.id: e for e in self.events_of("command.result") if e.id in wanted}
            if len(results) == len(wanted):
                break
            await asyncio.sleep(0.1)
        missing = [c.command for rid, c in wanted.items() if rid not in results]
        if missing:
            return Check("commands", False, f"no command.result for {', '.join(missing)}")
        wrong = [c.command for rid, c in wanted.items() if results[rid].data.command_id != c.id]
        unknown = results[command_result_id(sent[-2])].data.status
        if wrong or unknown != "failed":
            return Check("commands", False, f"wrong command_id for {wrong}" if wrong
                         else f"an unknown command was answered {unknown}, not failed")
        done = [c for rid, c in wanted.items() if c.command in FLOOR_COMMAND_EVENTS
                and results[rid].data.status == "ok"]
        if unproven := await self._without_their_event(done, sent_at):
            return Check("commands", False, f"answered ok without the event of what they did: {unproven}")
        statuses = ", ".join(f"{c.command}={results[rid].data.status}" for rid, c in wanted.items())
        return Check("commands", True, f"one command.result per command and attempt ({statuses})")

    async def _without_their_event(self, done: list[Command], since: datetime) -> list[str]:
        """The floor commands answered `ok` with no event of what they did on their reference (5 s to
        come)."""
        deadline = asyncio.get_running_loop().time() + 5
        while True:
            missing = [c.command for c in done if not any(
                e.type == FLOOR_COMMAND_EVENTS[c.command] and e.subject in c.refs and e.time >= since
                for e in self._journey_events())]
            if not missing or asyncio.get_running_loop().time() > deadline:
                return sorted(set(missing))  # a command and its retry: one name
            await asyncio.sleep(0.1)


async def run_checks(module: str, *, nats_url: str | None, creds: str | None = None,
                     tls_ca: str | None = None, watch_seconds: float = 15.0) -> list[Check]:
    """`tls_ca`: the configured server's certificate authority, for TLS (an embedded one is plain)."""
    connector = load_connector(module)
    with tempfile.TemporaryDirectory(prefix="switchboard-check-") as tmp:
        server = nats_server(nats_url, creds, Path(tmp), connector.system)
        async with server as (url, kit_creds, connector_creds):
            tls = tls_ca if nats_url else None
            nc = await bus.connect(url, "switchboard-conformance", creds=kit_creds, tls_ca=tls)
            try:
                await ensure_streams(nc.jetstream(), 120.0, systems=[connector.system])
                kit = Kit(connector, nc, watch_seconds=watch_seconds)
                await nc.subscribe(f"svc.events.{connector.system}.>", cb=_sync(kit.on_message))
                async with ConnectorRuntime(connector, nats_url=url, data_dir=Path(tmp) / "data",
                                            heartbeat_interval=1.0, creds=connector_creds,
                                            tls_ca=tls) as runtime:
                    async with asyncio.timeout(30):
                        await runtime.ready.wait()
                    await kit.watch()
                    checks = [kit.check_heartbeats(), await kit.check_snapshots(), await kit.check_commands()]
                    checks.insert(0, kit.check_events())  # last: it also covers the command results
            finally:
                await nc.close()
    return checks


def _sync(handler: Callable[[Msg], None]) -> Callable[[Msg], Awaitable[None]]:
    async def callback(msg: Msg) -> None:
        handler(msg)

    return callback


def main(module: str, nats_url: str | None, creds: str | None = None, tls_ca: str | None = None) -> int:
    checks = asyncio.run(run_checks(module, nats_url=nats_url, creds=creds, tls_ca=tls_ca))
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'} {check.name}: {check.detail}", flush=True)
    failed = [c.name for c in checks if not c.passed]
    print(f"{module}: {'conforms' if not failed else 'fails ' + ', '.join(failed)}")
    return 1 if failed else 0
