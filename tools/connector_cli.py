"""`switchboard connector …`: run the simulated systems, run or check a connector, switch faults."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

from switchboard.settings import BusSection, DatabaseSection, TokenSection, load_section

log = logging.getLogger(__name__)
FAULT_FLAGS = ("malformed", "duplicates", "out_of_order", "drift", "slow")


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _faults_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from connectors.sim.faults import Faults  # noqa: PLC0415

    faults: dict[str, Faults] = {}
    for system in args.outage or []:
        faults.setdefault(system, Faults()).outage = True
    for flag in FAULT_FLAGS:
        for item in getattr(args, flag) or []:
            system, _, value = item.partition("=")
            setattr(faults.setdefault(system, Faults()), flag, float(value))
    return faults


def _nats_url() -> str:
    url = load_section(BusSection).nats_url
    if not url:
        sys.exit("set SWITCHBOARD_NATS_URL (or run `switchboard demo`)")
    return url


def _services(text: str) -> dict[str, float]:
    """`passport=12,tax=15`: service types and their mean service minutes."""
    pairs = (item.partition("=") for item in _csv(text))
    services = {name.strip(): float(minutes) for name, _, minutes in pairs}
    if not services or not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", name) for name in services):
        sys.exit("--services takes code=minutes pairs, e.g. passport=12,tax=15")
    return services


async def run_simulation(*, systems: list[str], sites: list[str], speed: float, arrivals_per_hour: float,
                         nats_url: str, data_dir: Path, faults: dict[str, Any], admin_port: int | None,
                         services: dict[str, float] | None = None, report_every: float = 10.0,
                         creds: dict[str, str] | None = None, tls_ca: str | None = None) -> None:
    """Run until cancelled; prints a line of counts every `report_every` seconds."""
    from connectors.sim.admin import AdminServer  # noqa: PLC0415
    from connectors.sim.run import Simulation  # noqa: PLC0415

    simulation = Simulation(systems=systems, sites=sites, speed=speed, nats_url=nats_url, data_dir=data_dir,
                            arrivals_per_hour=arrivals_per_hour, faults=faults, services=services,
                            creds=creds, tls_ca=tls_ca)
    admin = AdminServer(simulation, admin_port) if admin_port is not None else None
    async with simulation:
        if admin is not None:
            await admin.start()
            print(f"  simulator admin: http://127.0.0.1:{admin.port}/faults", flush=True)
        try:
            while True:
                await asyncio.sleep(report_every)
                stats = simulation.stats()
                records = sum(s["records"] for s in stats["systems"].values())
                down = [n for n, s in stats["systems"].items() if s["upstream"] == "down"]
                print(f"  {stats['journeys']} journeys, {records} upstream records"
                      + (f", down: {', '.join(down)}" if down else ""), flush=True)
        finally:
            if admin is not None:
                await admin.stop()


def _sim(args: argparse.Namespace) -> None:
    bus = load_section(BusSection)
    systems = _csv(args.systems)
    # each system with its own profile's credentials (and authority, for TLS), or all with the process's
    creds = {s: str(Path(args.profiles) / f"{s}.creds") for s in systems} if args.profiles \
        else {s: bus.nats_creds for s in systems if bus.nats_creds}
    profiles_ca = Path(args.profiles) / "nats-ca.pem" if args.profiles else None
    tls_ca = str(profiles_ca) if profiles_ca and profiles_ca.exists() else bus.nats_tls_ca
    print(f"simulating {args.systems} for sites {args.sites} at {args.speed}x (Ctrl-C stops)", flush=True)
    try:
        asyncio.run(run_simulation(
            systems=systems, sites=_csv(args.sites), speed=args.speed, creds=creds,
            arrivals_per_hour=args.arrivals_per_hour, nats_url=_nats_url(), tls_ca=tls_ca,
            data_dir=Path(load_section(TokenSection).data_dir) / "connectors", faults=_faults_from_args(args),
            admin_port=args.admin_port, services=_services(args.services)))
    except KeyboardInterrupt:
        print("\nstopped; unsent events stay spooled for the next start")


def _check(args: argparse.Namespace) -> None:
    from tools.conformance import main  # noqa: PLC0415

    bus = load_section(BusSection)
    sys.exit(main(args.module, bus.nats_url, bus.nats_creds, bus.nats_tls_ca))


def _run(args: argparse.Namespace) -> None:
    from connectors.sdk import ConnectorRuntime  # noqa: PLC0415
    from connectors.sdk.runtime import ConnectorSection  # noqa: PLC0415
    from tools.conformance import load_connector  # noqa: PLC0415

    connector = load_connector(args.module)
    data_dir = Path(load_section(TokenSection).data_dir) / "connectors"

    async def run() -> None:
        bus, profile = load_section(BusSection), load_section(ConnectorSection)
        async with ConnectorRuntime(connector, nats_url=_nats_url(), data_dir=data_dir,
                                    creds=bus.nats_creds, tls_ca=bus.nats_tls_ca,
                                    sites=profile.connector_sites, inbox=profile.connector_inbox):
            await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        print("\nstopped")


def _faults(args: argparse.Namespace) -> None:
    """Switch faults of a running simulator through its admin endpoint."""
    base = f"http://127.0.0.1:{args.admin_port}"  # the simulator's admin endpoint, on loopback only
    if args.drift_now:
        request = urllib.request.Request(f"{base}/drift/{args.system}", data=b"{}", method="POST")  # noqa: S310
    elif args.set:
        patch = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
        request = urllib.request.Request(f"{base}/faults/{args.system}", data=json.dumps(patch).encode(),  # noqa: S310
                                         method="POST", headers={"Content-Type": "application/json"})
    else:
        request = urllib.request.Request(f"{base}/faults")  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback admin URL
        print(response.read().decode())


def _tls_ca(args: argparse.Namespace) -> str | None:
    """The servers' certificate authority: asked for, configured, or the issuer's own when it made one."""
    from switchboard.natsauth import Issuer  # noqa: PLC0415

    issuers = Issuer(_issuer_dir(args)).tls_ca
    own = str(issuers) if issuers.exists() else None
    return args.nats_tls_ca or load_section(BusSection).nats_tls_ca or own


def _issuer_dir(args: argparse.Namespace) -> Path:
    folder = Path(args.issuer) if args.issuer else Path(load_section(TokenSection).data_dir) / "nats-auth"
    if not (folder / "operator.secret").exists():
        sys.exit(f"no NATS issuer in {folder}: run `switchboard nats init` (or pass the demo's --issuer)")
    return folder


async def _audit(action: str, target: str, result: dict[str, Any]) -> None:
    """An audit row by `cli-<os user>` (pseudonymised like any actor when it looks personal) when the
    database is reachable; else a log line that says so."""
    import asyncpg  # noqa: PLC0415

    from backend.audit.services import record  # noqa: PLC0415
    from backend.auth import Principal  # noqa: PLC0415

    actor = Principal(sub=f"cli-{getpass.getuser()}", roles=frozenset({"admin"}), sites=None)
    database_url = load_section(DatabaseSection).database_url
    try:
        conn = await asyncpg.connect(database_url, timeout=5) if database_url else None
    except (OSError, asyncpg.PostgresError) as exc:
        conn = None
        log.warning("audit: database unreachable (%s)", type(exc).__name__)
    if conn is None:
        log.warning("audit (not stored): %s %s %s %s", actor.sub, action, target, json.dumps(result))
        return
    try:
        await record(conn, actor, action=action, target=target, reason=None, result=result)
    finally:
        await conn.close()


def issue_profile(issuer_dir: Path, *, system: str, sites: list[str], out: Path, nats_url: str,
                  backend_url: str, tls_ca: str | None = None) -> Path:
    """Write `<out>/<system>.env` and the credentials file beside it (both owner-only), and with `tls_ca` (the
    NATS servers' certificate authority) a copy of it as `<out>/nats-ca.pem`; the .env's path."""
    from switchboard.natsauth import Issuer, inbox_prefix, write_secret  # noqa: PLC0415

    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    creds = write_secret(out.resolve() / f"{system}.creds",
                         Issuer(issuer_dir).connector_creds(system, tuple(sites)))
    lines = [f"SWITCHBOARD_NATS_URL={nats_url}", f"SWITCHBOARD_NATS_CREDS={creds}",
             f"SWITCHBOARD_BACKEND_URL={backend_url}"]
    if tls_ca:
        ca = out.resolve() / "nats-ca.pem"
        ca.write_bytes(Path(tls_ca).read_bytes())
        lines.append(f"SWITCHBOARD_NATS_TLS_CA={ca}")
    if sites:
        lines += [f"SWITCHBOARD_CONNECTOR_SITES={','.join(sites)}",
                  f"SWITCHBOARD_CONNECTOR_INBOX={inbox_prefix(system, tuple(sites))}"]
    return write_secret(out.resolve() / f"{system}.env", "\n".join(lines) + "\n")


def _profile(args: argparse.Namespace) -> None:
    from dashboard.settings import DashboardSection  # noqa: PLC0415

    try:
        path = issue_profile(_issuer_dir(args), system=args.system, sites=args.site or [],
                             out=Path(args.out), nats_url=args.nats_url or _nats_url(),
                             backend_url=load_section(DashboardSection).backend_url, tls_ca=_tls_ca(args))
    except ValueError as exc:
        sys.exit(str(exc))
    asyncio.run(_audit("connector.profile", f"system:{args.system}", {"sites": args.site or "*"}))
    print(path)


def _revoke(args: argparse.Namespace) -> None:
    from switchboard.natsauth import Issuer, push_account  # noqa: PLC0415

    issuer = Issuer(_issuer_dir(args))
    revoked = issuer.revoke(args.system)
    asyncio.run(push_account(args.nats_url or _nats_url(), issuer, tls_ca=_tls_ca(args)))
    asyncio.run(_audit("connector.revoke", f"system:{args.system}", {"profiles": len(revoked)}))
    print(f"revoked {len(revoked)} profile(s) of {args.system}")


def add_connector_commands(commands: Any) -> None:
    connector = commands.add_parser("connector", help="connectors: simulated systems, any connector, the kit")
    kinds = connector.add_subparsers(dest="connector", required=True)

    sim = kinds.add_parser("sim", help="run simulated upstream systems behind their connectors")
    sim.add_argument("--systems", default="crm,appointments,queue,contact_center,core")
    sim.add_argument("--sites", default="north,south,central", help="comma-separated site codes")
    sim.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
    sim.add_argument("--services", default="passport=12,benefits=20,licence=8,tax=15",
                     help="service types and their mean service minutes")
    sim.add_argument("--arrivals-per-hour", type=float, default=20.0,
                     help="new customers per site per simulated hour")
    sim.add_argument("--admin-port", type=int, default=8091, help="loopback admin endpoint for faults")
    sim.add_argument("--outage", action="append", metavar="SYSTEM", help="start with this upstream down")
    sim.add_argument("--profiles",
                     help="a folder of connector profiles: each system connects with its <system>.creds")
    for flag in FAULT_FLAGS:
        sim.add_argument(f"--{flag.replace('_', '-')}", action="append", metavar="SYSTEM=VALUE",
                         help="seconds of delay" if flag == "slow" else "share of events/changes, 0..1")
    sim.set_defaults(run=_sim)

    check = kinds.add_parser("check", help="run the conformance kit against a connector module")
    check.add_argument("module", help="a module with create_connector(), e.g. connectors.sim.queue")
    check.set_defaults(run=_check)

    run = kinds.add_parser("run", help="run one connector module with the SDK runtime")
    run.add_argument("module")
    run.set_defaults(run=_run)

    faults = kinds.add_parser("faults", help="show or switch faults of a running simulator")
    faults.add_argument("system", nargs="?", default="")
    faults.add_argument("set", nargs="*", metavar="NAME=VALUE", help="e.g. outage=true malformed=0.2")
    faults.add_argument("--drift-now", action="store_true", help="change one record silently, now")
    faults.add_argument("--admin-port", type=int, default=8091)
    faults.set_defaults(run=_faults)

    profile = kinds.add_parser("profile",
                               help="issue a connector profile: <system>.env and its NATS credentials")
    profile.add_argument("--system", required=True)
    profile.add_argument("--site", action="append",
                         help="limit it to this site (repeatable); all sites if none")
    profile.add_argument("--out", required=True,
                         help="the folder to write <system>.env and <system>.creds in")
    revoke = kinds.add_parser("revoke", help="withdraw every profile of a system, without restarting NATS")
    revoke.add_argument("--system", required=True)
    for command in (profile, revoke):
        command.add_argument("--issuer", help="the NATS issuer's folder (default: <data dir>/nats-auth)")
        command.add_argument("--nats-url", help="the running NATS server (default: SWITCHBOARD_NATS_URL)")
        command.add_argument("--nats-tls-ca", help="its certificate authority, for TLS; a profile gets a "
                                                   "copy (default: SWITCHBOARD_NATS_TLS_CA)")
    profile.set_defaults(run=_profile)
    revoke.set_defaults(run=_revoke)
