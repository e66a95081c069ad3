"""`switchboard chaos`: events from simulated connectors, duplicated and reordered across the whole run,
while backend replicas are SIGKILLed at random moments and Postgres and NATS are each killed and restarted.

Connectors of the systems that receive commands answer every command `ok` (and send heartbeats), as
real ones do. Afterwards every event JetStream acknowledged must be applied exactly once, every journey
must equal the reference merge of its distinct events (its site included, though many journeys name
several sites), nothing may be recorded as a failure, every command the v1 rules call for must be
written once and delivered once, and JetStream must have redelivered to the apply consumer messages a
killed replica held (work in flight, not the plan's own resends). Every wait has a deadline: a run that
passes one fails with the reason. The run uses embedded servers of its own, since it must kill them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import msgspec
import nats
import uvloop
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from backend import messaging
from backend.journeys import services
from switchboard.commands import COMMANDS_STREAM, command_result_id, consumer_name, decode_command
from switchboard.waits import wait_set
from tools.backend_process import BackendProcess
from tools.bench.common import progress, report
from tools.chaos_plan import PlannedJourney, event_id, make_plan
from tools.embedded import EmbeddedNats, EmbeddedPostgres
from tools.reference_merge import expected_journey, observed

REPLICAS = 2
PUBLISH_RATE = 2500  # events per second: slow enough that kills land while work is in flight
COMMANDED_SYSTEMS = ("crm", "queue", "appointments")  # the v1 rules send commands to these
PROGRESS_EVERY_S = 5.0
CALL_DEADLINE_S = 10.0  # one request to a server that is up
DRAIN_DEADLINE_S = 900.0  # from the last acknowledgement until every event and command is settled
_T = TypeVar("_T")


class DeadlinePassedError(Exception):
    """A wait of the run took longer than its deadline: the run fails with this reason."""


async def within(seconds: float, what: str, awaitable: Awaitable[_T]) -> _T:
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise DeadlinePassedError(f"{what}: no result within {seconds:.0f}s") from None


@dataclass
class Tally:
    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    broker_duplicates: int = 0
    stored: int = 0  # the plan's messages JetStream stored (not caught by its duplicate window)
    kills_in_flight: int = 0  # backend kills at which the apply consumer had deliveries not yet acknowledged


class CommandAnswerer:
    """The command side of one system's connector: heartbeats, and `ok` for every command it is sent.

    It binds to the durable consumer a real connector of the system uses, and counts what it is
    delivered by command and attempt (a relay resend is a new attempt; a transport redelivery is not).
    """

    def __init__(self, system: str, rng: random.Random) -> None:
        self.system, self.rng = system, rng
        self.delivered: set[tuple[str, int]] = set()
        self.commands: dict[str, Any] = {}
        self.stopping = asyncio.Event()

    def _event(self, type_: str, event_id: str, data: dict[str, Any]) -> tuple[str, bytes, str]:
        event = {"specversion": "1.0", "id": event_id, "source": f"/{self.system}", "type": type_,
                 "subject": f"connector:{self.system}-chaos", "time": datetime.now(UTC).isoformat(),
                 "data": data}
        return f"svc.events.{self.system}.{type_}", msgspec.json.encode(event), f"/{self.system} {event_id}"

    async def _publish(self, nc: NATS, message: tuple[str, bytes, str]) -> None:
        subject, body, msg_id = message
        while not self.stopping.is_set():  # until acknowledged: NATS restarts under it
            try:
                await nc.jetstream().publish(subject, body, headers={"Nats-Msg-Id": msg_id}, timeout=2)
                return
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.2)

    async def _heartbeats(self, nc: NATS) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await nc.jetstream().publish(*self._event("connector.heartbeat", event_id(self.rng),
                                                          {"upstream": "up", "version": "1.0.0"})[:2],
                                                          timeout=2)
            await wait_set(self.stopping, 5)

    async def _answer(self, nc: NATS, message: Any) -> None:
        command = decode_command(message.data)
        self.delivered.add((command.id, command.attempt))
        self.commands[command.id] = command
        await self._publish(nc, self._event("command.result", command_result_id(command),
                                            {"command_id": command.id, "status": "ok"}))
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await message.ack()  # a lost ack redelivers the command; its answer has the same id

    async def run(self, nats_url: str, creds: str | None) -> None:
        nc = await within(CALL_DEADLINE_S, f"{self.system} connector connect",
                          messaging.connect(nats_url, f"switchboard-chaos-{self.system}", creds))
        js = nc.jetstream()
        await within(CALL_DEADLINE_S, f"{self.system} command consumer", js.add_consumer(
            COMMANDS_STREAM, ConsumerConfig(
                durable_name=consumer_name(self.system), filter_subject=f"svc.commands.{self.system}.>",
                ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30,
                max_ack_pending=1000)))
        subscription = await js.pull_subscribe_bind(durable=consumer_name(self.system),
                                                    stream=COMMANDS_STREAM)
        heartbeats = asyncio.create_task(self._heartbeats(nc))
        try:
            while not self.stopping.is_set():
                try:
                    messages = await subscription.fetch(100, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                except nats.errors.Error:
                    await asyncio.sleep(0.5)  # reconnecting: the consumer is durable
                    continue
                # a batch's answers go out together, as a connector's publisher sends its spool: one at a
                # time, each waiting for JetStream's fsync, they would miss the relay's answer timeout
                await asyncio.gather(*(self._answer(nc, message) for message in messages))
        finally:
            self.stopping.set()
            await heartbeats
            await nc.close()


async def publish_all(nats_url: str, messages: list[tuple[str, bytes, str]], tally: Tally,
                      creds: str | None) -> None:
    nc = await within(CALL_DEADLINE_S, "publisher connect",
                      messaging.connect(nats_url, "switchboard-chaos-publisher", creds))
    js = nc.jetstream()
    started = time.monotonic()

    async def send(subject: str, body: bytes, msg_id: str) -> None:
        while True:  # a connector retries until JetStream acknowledges: NATS restarts under it
            try:
                ack = await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}, timeout=2)
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.2)
        tally.broker_duplicates += bool(ack.duplicate)
        tally.stored += not ack.duplicate
        doc = msgspec.json.decode(body)
        tally.acknowledged.add((doc["source"], doc["id"]))

    pending: set[asyncio.Task[None]] = set()
    for n, (subject, body, msg_id) in enumerate(messages):
        pending.add(asyncio.create_task(send(subject, body, msg_id)))
        if len(pending) >= 200:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        ahead = n / PUBLISH_RATE - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await asyncio.gather(*pending)
    await nc.close()


async def count_applied(database_url: str) -> int | None:
    with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
        conn = await asyncpg.connect(database_url, timeout=2)
        try:
            return await conn.fetchval("SELECT count(*) FROM events", timeout=5)
        finally:
            await conn.close()
    return None


async def unsettled_commands(database_url: str) -> int | None:
    with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
        conn = await asyncpg.connect(database_url, timeout=2)
        try:
            return await conn.fetchval(
                "SELECT count(*) FROM commands WHERE status IN ('pending', 'held', 'sent')", timeout=5)
        finally:
            await conn.close()
    return None


async def apply_consumer(nc: NATS) -> Any | None:
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        return await nc.jetstream().consumer_info(messaging.EVENTS_STREAM, messaging.APPLY_CONSUMER,
                                                  timeout=2)
    return None


def _command_findings(journeys: list[PlannedJourney], rows: list[asyncpg.Record],
                      crm: CommandAnswerer) -> dict[str, Any]:
    """Commands written and journey summaries delivered, per planned journey, against what the rules allow."""
    owner = {ref: n for n, journey in enumerate(journeys) for ref in journey.refs}
    written: dict[int, Counter[str]] = defaultdict(Counter)
    unexpected = 0
    for row in rows:
        found = {owner.get(ref) for ref in row["refs"]}
        index = found.pop() if len(found) == 1 else None
        if index is None:
            unexpected += 1  # its references are no planned journey's, or several journeys'
            continue
        written[index][row["command"]] += 1
    delivered: Counter[int] = Counter()
    for command_id, _attempt in crm.delivered:
        command = crm.commands[command_id]
        if command.command == "journey.summary":
            delivered[owner.get(command.refs[0], -1)] += 1
    unexpected += delivered.pop(-1, 0)
    missing = doubled = 0
    for n, journey in enumerate(journeys):
        for kind, (least, most) in journey.command_bounds().items():
            count = written[n][kind]
            missing += count < least
            if count > most:
                if least == most:
                    doubled += 1
                else:
                    unexpected += 1
        summaries = delivered[n]
        missing += journey.finished and summaries == 0
        doubled += journey.finished and summaries > 1
        unexpected += not journey.finished and summaries > 0
    return {"commands_written": dict(Counter(r["command"] for r in rows)),
            "summaries_delivered": sum(delivered.values()),
            "commands_missing": missing, "commands_doubled": doubled, "commands_unexpected": unexpected}


async def verify(database_url: str, tally: Tally, journeys: list[PlannedJourney],
                 crm: CommandAnswerer | None) -> dict[str, Any]:
    """What the run left, against the plan; commands are checked when `crm` answered them."""
    conn = await asyncpg.connect(database_url)
    try:
        planned = {(e["source"], e["id"]) for journey in journeys for e in journey.events}
        planned |= tally.acknowledged
        stored = await conn.fetch("SELECT source, id FROM events")
        rows = [r for r in stored if (r["source"], r["id"]) in planned]
        applied = {(r["source"], r["id"]) for r in rows}
        failure_kinds = {r["kind"]: r["n"] for r in await conn.fetch(
            "SELECT kind, count(*) AS n FROM failures GROUP BY kind")}
        mismatched = mismatched_sites = duplicated_journeys = 0
        for journey in journeys:
            ids = {r["journey_id"] for r in await conn.fetch(
                "SELECT journey_id FROM journey_refs WHERE ref = ANY($1::text[])", sorted(journey.refs))}
            duplicated_journeys += max(len(ids) - 1, 0)
            stored = await services.get_journey(conn, ids.pop()) if ids else None
            expected = expected_journey(journey.events)
            if stored is None or observed(stored) != expected or len(stored.timeline) != len(journey.events):
                mismatched += 1
            mismatched_sites += stored is None or stored.site != expected["site"]
        commands = await conn.fetch("SELECT command, refs, status FROM commands")
        unsettled = sum(r["status"] != "ok" for r in commands)
    finally:
        await conn.close()
    failures = sum(failure_kinds.values())
    return {
        "applied": len(applied),
        # the plan's resends: caught by JetStream's duplicate window, or stored and recognised by the inbox
        "duplicates_suppressed": tally.broker_duplicates + (tally.stored - len(applied) - failures),
        "lost": len(tally.acknowledged - applied),
        "applied_twice": (len(rows) - len(applied)) + duplicated_journeys,
        "mismatched_journeys": mismatched,
        # of those, journeys not at the site the reference puts them (many journeys name several sites)
        "mismatched_sites": mismatched_sites,
        "failures": failures,
        "failure_kinds": failure_kinds,
        **(_command_findings(journeys, commands, crm) if crm else {}),
        **({"commands_unsettled": unsettled} if crm else {}),
    }


class Progress:
    """A line on stderr every few seconds, whatever the run is waiting for."""

    def __init__(self, database_url: str, tally: Tally, total: int) -> None:
        self.database_url, self.tally, self.total = database_url, tally, total
        self.phase = "starting"
        self.started = time.monotonic()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            applied = await count_applied(self.database_url)
            unsettled = await unsettled_commands(self.database_url)
            progress(f"t={time.monotonic() - self.started:6.1f}s {self.phase}: acknowledged"
                     f" {len(self.tally.acknowledged):,}/{self.total:,}, applied {_or_unknown(applied)},"
                     f" commands unsettled {_or_unknown(unsettled)}")


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


async def _drain(nc: NATS, pg: EmbeddedPostgres, backends: list[BackendProcess],
                 answering: list[asyncio.Task[None]]) -> Any:
    """Until every message is applied and acknowledged and every command answered; the apply consumer's
    info."""
    while True:
        for task in answering:
            if task.done():
                task.result()  # a connector that stopped says why
                raise DeadlinePassedError("a command answerer stopped before the run drained")
        info = await apply_consumer(nc)
        if info is not None and info.num_pending == 0 and info.num_ack_pending == 0 \
                and await unsettled_commands(pg.url) == 0 and all(b.ready() for b in backends):
            return info
        await asyncio.sleep(1)


async def _chaos(total: int, kills: int, seed: int, root: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    pg, ns = EmbeddedPostgres(root / "postgres"), EmbeddedNats(root / "nats")
    progress("starting embedded Postgres and NATS (fsync before acknowledging)")
    pg.start()
    ns.start()
    env = {**os.environ, "SWITCHBOARD_DATABASE_URL": pg.url, "SWITCHBOARD_NATS_URL": ns.url,
           "SWITCHBOARD_NATS_CREDS": ns.creds or "", "SWITCHBOARD_DATA_DIR": str(root),
           "SWITCHBOARD_LOG_LEVEL": "WARNING"}
    backends = [BackendProcess(env, root / f"backend-{i}.log") for i in range(REPLICAS)]
    answerers = {system: CommandAnswerer(system, random.Random(f"{seed}-{system}"))
                 for system in COMMANDED_SYSTEMS}
    tally = Tally()
    ticker = Progress(pg.url, tally, total)
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(ticker.run())]
    observer = None
    try:
        observer = await within(CALL_DEADLINE_S, "observer connect",
                                messaging.connect(ns.url, "switchboard-chaos", ns.creds))
        await within(120, "creating the streams", messaging.ensure_streams(observer.jetstream(), 120.0))
        answering = [asyncio.create_task(a.run(ns.url, ns.creds)) for a in answerers.values()]
        tasks += answering
        for b in backends:
            b.start()
        for b in backends:
            b.wait_ready()
        plan = make_plan(total, seed)
        progress(f"{total:,} events of {len(plan.journeys):,} journeys as {len(plan.messages):,} messages;"
                 f" {kills} backend kills, one Postgres and one NATS kill, at random points of the run; seed"
                 f" {seed}")
        # each kill happens once this share of the events is acknowledged, so all land mid-run
        moments = sorted([("backend", rng.uniform(0.02, 0.98)) for _ in range(kills)]
                         + [("postgres", rng.uniform(0.2, 0.5)), ("nats", rng.uniform(0.5, 0.8))],
                         key=lambda m: m[1])
        publisher = asyncio.create_task(publish_all(ns.url, plan.messages, tally, ns.creds))
        tasks.append(publisher)
        publish_deadline = time.monotonic() + 3 * len(plan.messages) / PUBLISH_RATE + 180
        ticker.phase = "publishing under kills"
        for what, share in moments:
            while len(tally.acknowledged) < share * total and not publisher.done():
                if time.monotonic() > publish_deadline:
                    raise DeadlinePassedError(f"publishing: {len(tally.acknowledged):,} of {total:,}"
                                              " acknowledged when the deadline passed")
                await asyncio.sleep(0.02)
            if what == "backend":
                before_kill = await apply_consumer(observer)
                tally.kills_in_flight += bool(before_kill and before_kill.num_ack_pending)
                victim = rng.choice(backends)
                victim.kill()
                victim.start()
            else:
                server = pg if what == "postgres" else ns
                server.kill()
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                server.start()
            progress(f"t={time.monotonic() - ticker.started:6.1f}s killed {what} (due at {share:.0%});"
                     f" acknowledged {len(tally.acknowledged):,}")
        ticker.phase = "publishing"
        await within(max(publish_deadline - time.monotonic(), 1), "publishing", asyncio.shield(publisher))
        ticker.phase = "draining (events applied, commands answered)"
        info = await within(DRAIN_DEADLINE_S, "draining", _drain(observer, pg, backends, answering))
        for answerer in answerers.values():
            answerer.stopping.set()
        figures = await verify(pg.url, tally, plan.journeys, answerers["crm"])
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if observer is not None:
            await observer.close()
        for b in backends:
            try:
                b.stop()
            except AssertionError as exc:  # the data is verified already; say so rather than lose the figures
                progress(f"{b.log_path.name}: {exc}; killed")
        ns.stop()
        pg.stop()
    return {"published": total, "acknowledged": len(tally.acknowledged), **figures,
            # deliveries beyond the first of each stream message: only a replica that took a message and
            # died (or stalled) before acknowledging it causes one, never a resend of the plan
            "redelivered": info.delivered.consumer_seq - info.delivered.stream_seq,
            "kills_in_flight": tally.kills_in_flight, "seed": seed, "backend_kills": kills,
            "server_restarts": 2}


def passed(figures: dict[str, Any]) -> bool:
    zero = ("lost", "applied_twice", "mismatched_journeys", "mismatched_sites", "failures",
            "commands_missing", "commands_doubled", "commands_unexpected", "commands_unsettled")
    return all(figures[name] == 0 for name in zero) and figures["acknowledged"] == figures["applied"]


def run_chaos(*, events: int, kills: int, seed: int | None) -> None:
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    print(f"chaos: {events:,} events, {kills} backend kills, seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="switchboard-chaos-") as tmp:
        try:
            figures = uvloop.run(_chaos(events, kills, seed, Path(tmp)))
        except DeadlinePassedError as exc:
            print(f"FAIL: {exc}", flush=True)
            report({"published": events, "seed": seed, "backend_kills": kills, "reason": str(exc)})
            sys.exit(1)
    ok = passed(figures)
    print(("PASS" if ok else "FAIL") + ": " + ", ".join(f"{name} {figures[name]}" for name in (
        "lost", "applied_twice", "mismatched_journeys", "mismatched_sites", "failures", "commands_missing",
        "commands_doubled",
        "commands_unexpected", "commands_unsettled", "redelivered")), flush=True)
    if not ok:
        figures["reason"] = "figures that must be zero are not"
    report(figures)
    if not ok:
        sys.exit(1)
