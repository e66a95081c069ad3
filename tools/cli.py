"""`switchboard`: one command for every process (CONTRACT section 1)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

from switchboard import logs, tracing
from switchboard.settings import DatabaseSection, LogSection, TokenSection, TracingSection, load_section
from tools.connector_cli import add_connector_commands


def _backend(args: argparse.Namespace) -> None:
    import uvicorn  # noqa: PLC0415

    from backend.live.schemas import MAX_CLIENT_MESSAGE_BYTES  # noqa: PLC0415

    # live clients send small control messages: refuse big frames before buffering them, and skip
    # per-message compression, whose zlib state would cost each connection hundreds of KiB
    uvicorn.run("backend.app:create_app", factory=True, host=args.host, port=args.port,
                log_level=load_section(LogSection).log_level.lower(), access_log=False, log_config=None,
                ws_max_size=4 * MAX_CLIENT_MESSAGE_BYTES, ws_per_message_deflate=False,
                # SIGTERM never waits on a lingering connection for long: in-flight work is redelivered anyway
                timeout_graceful_shutdown=10)


def _migrate(_: argparse.Namespace) -> None:
    from backend import db  # noqa: PLC0415

    settings = load_section(DatabaseSection)
    if not settings.database_url:
        sys.exit("set SWITCHBOARD_DATABASE_URL (and SWITCHBOARD_DATABASE_OWNER_URL to migrate as the owner)")

    async def run() -> list[str]:
        import asyncpg  # noqa: PLC0415

        # as the owner when its URL is set, granting SWITCHBOARD_DATABASE_URL's role what the backend may do
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await db.migrate_with_owner(conn, settings.database_owner_url)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    except db.MigrationsPendingError as exc:
        sys.exit(str(exc))
    print("applied: " + ", ".join(applied) if applied else "up to date")


def _purge(args: argparse.Namespace) -> None:
    import asyncpg  # noqa: PLC0415

    from backend import db  # noqa: PLC0415
    from backend.retention.services import Kind, RetentionPolicy, check_audit_floor, purge  # noqa: PLC0415
    from backend.settings import BackendSettings  # noqa: PLC0415

    settings = BackendSettings.from_env()
    if not settings.database.database_url:
        sys.exit("set SWITCHBOARD_DATABASE_URL")
    try:
        policy = RetentionPolicy.from_settings(settings)
    except ValueError as exc:
        sys.exit(str(exc))

    async def run() -> dict[Kind, int] | None:
        pool = await db.create_pool(settings.database.database_url, min_size=1, max_size=1)  # type: ignore[arg-type]
        try:
            async with pool.acquire() as conn:
                await check_audit_floor(conn, policy)
            return await purge(pool, policy, dry_run=args.dry_run)
        finally:
            await pool.close()

    try:
        counts = asyncio.run(run())
    except (ValueError, asyncpg.PostgresError) as exc:
        sys.exit(f"purge refused: {exc}")
    if counts is None:
        sys.exit("another purge is running (a backend's retention job or another `switchboard purge`)")
    verb = "would remove" if args.dry_run else "removed"
    for kind, count in counts.items():
        print(f"{kind}: {verb} {count} (kept {policy.kept_for(kind).total_seconds() / 86400:g} days)")


def _token(args: argparse.Namespace) -> None:
    from switchboard.tokens import mint_token  # noqa: PLC0415

    sites = "*" if args.site == ["*"] else args.site
    try:
        token = mint_token(load_section(TokenSection), sub=args.sub, roles=args.role, sites=sites,
                           system=args.system, ttl=timedelta(minutes=args.ttl_minutes))
    except ValueError as exc:  # an unknown role, or a secret too weak or too exposed to sign with
        sys.exit(f"token not minted: {exc}")
    print(token)


def _dashboard(args: argparse.Namespace) -> None:
    from dashboard.app import run  # noqa: PLC0415
    from dashboard.settings import DashboardSettings  # noqa: PLC0415

    run(DashboardSettings.from_env(), host=args.host, port=args.port, demo=args.demo or None)


def _demo(args: argparse.Namespace) -> None:
    from tools.demo import run_demo  # noqa: PLC0415

    run_demo(host=args.host, port=args.port, sites=args.sites, speed=args.speed,
             dashboard_port=args.dashboard_port)


def _bench(args: argparse.Namespace) -> None:
    from tools.bench.ingest import run_ingest_bench  # noqa: PLC0415

    run_ingest_bench(events=args.events, batch=args.batch, replicas=args.replicas,
                     stored_journeys=args.stored_journeys, nats_fsync=not args.no_fsync,
                     nats_auth=args.nats_auth == "on", rounds=args.rounds, deadline_s=args.deadline,
                     before=args.before, site_subjects=args.site_subjects)


def _chaos(args: argparse.Namespace) -> None:
    from tools.chaos import run_chaos  # noqa: PLC0415

    run_chaos(events=args.events, kills=args.kills, seed=args.seed)


def _bench_live(args: argparse.Namespace) -> None:
    from tools.bench.live import run_live_bench  # noqa: PLC0415

    run_live_bench(clients=args.clients, sites=args.sites, rate=args.rate, seconds=args.seconds,
                   fanout_clients=args.fanout_clients, updates=args.updates, keys=args.keys,
                   rounds=args.rounds, idle=args.idle, nats_fsync=not args.no_fsync)


def _bench_publish(args: argparse.Namespace) -> None:
    from tools.bench.publish import run_publish_bench  # noqa: PLC0415

    run_publish_bench(events=args.events, max_in_flight=args.max_in_flight, nats_fsync=not args.no_fsync)


def _nats_init(args: argparse.Namespace) -> None:
    from dashboard.settings import DashboardSection  # noqa: PLC0415
    from switchboard.natsauth import Issuer, init_deployment  # noqa: PLC0415
    from tools.connector_cli import issue_profile  # noqa: PLC0415

    issuer = Path(args.issuer)
    tls_names = [n for n in args.tls_names.split(",") if n]
    if tls_names and args.nats_tls_ca:
        sys.exit("--tls-names gives the servers a certificate of the issuer's authority: the profiles get"
                 " that one, not --nats-tls-ca")
    try:
        written = init_deployment(issuer, Path(args.server_dir), resolver_dir=args.resolver_dir,
                                  routes=[r for r in args.routes.split(",") if r],
                                  backend_creds=Path(args.backend_creds), tls_names=tls_names)
    except ValueError as exc:
        sys.exit(f"--tls-names: {exc}")
    tls_ca = args.nats_tls_ca or (str(Issuer(issuer).tls_ca) if tls_names else None)
    # a profile per connector system, issued once (revoke and issue again to replace one)
    backend_url = load_section(DashboardSection).backend_url
    for system in (s for s in args.profiles_for.split(",") if s):
        if not (Path(args.profiles) / f"{system}.creds").exists():
            written.append(issue_profile(issuer, system=system, sites=[], out=Path(args.profiles),
                                         nats_url=args.nats_url, backend_url=backend_url, tls_ca=tls_ca))
    if tls_ca and args.profiles:  # profiles issued before TLS was on find the authority beside them too
        ca = Path(args.profiles) / "nats-ca.pem"
        ca.write_bytes(Path(tls_ca).read_bytes())
        written.append(ca)
    if args.owner is not None:  # the credentials go to the processes' user; the servers' includes stay root's
        for folder in {Path(args.backend_creds).parent, *([Path(args.profiles)] if args.profiles else [])}:
            for path in [folder, *folder.iterdir()]:
                os.chown(path, args.owner, -1)
    for path in written:
        print(f"wrote {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    backend = commands.add_parser("backend", help="the Litestar backend and apply worker")
    backend.add_argument("--host", default="127.0.0.1")
    backend.add_argument("--port", type=int, default=8000)
    backend.set_defaults(run=_backend)

    dashboard = commands.add_parser("dashboard", help="the NiceGUI board (talks to SWITCHBOARD_BACKEND_URL)")
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)
    dashboard.add_argument("--demo", action="store_true",
                           help="let anyone pick a role and site (as SWITCHBOARD_DASHBOARD_DEMO=true)")
    dashboard.set_defaults(run=_dashboard)

    commands.add_parser("migrate", help="apply the SQL migrations (as SWITCHBOARD_DATABASE_OWNER_URL's role"
                        " when set)").set_defaults(run=_migrate)

    purge = commands.add_parser("purge", help="delete rows past their retention (SWITCHBOARD_RETENTION_*)")
    purge.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    purge.set_defaults(run=_purge)

    token = commands.add_parser("token", help="mint a local HS256 token")
    token.add_argument("--role", action="append", required=True, help="repeat for several roles")
    token.add_argument("--site", action="append", required=True, help="repeat for several sites, or '*'")
    token.add_argument("--system", help="for connector tokens: the system it publishes for")
    token.add_argument("--sub", default="local-user", help="an opaque user id, never a name or e-mail")
    token.add_argument("--ttl-minutes", type=int, default=720)
    token.set_defaults(run=_token)

    demo = commands.add_parser("demo", help="the whole stack on embedded Postgres and NATS")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--dashboard-port", type=int, default=8080)
    demo.add_argument("--sites", default="north,south,central", help="comma-separated site codes")
    demo.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
    demo.set_defaults(run=_demo)

    bench = commands.add_parser("bench", help="benchmarks against a bare baseline in the same run")
    bench_kinds = bench.add_subparsers(dest="bench", required=True)
    ingest = bench_kinds.add_parser("ingest", help="apply rate against a bare JetStream→asyncpg consumer")
    ingest.add_argument("--events", type=int, default=100_000)
    ingest.add_argument("--batch", type=int, default=500)
    ingest.add_argument("--replicas", type=int, default=1,
                        help="also measure this many backends sharing the work")
    ingest.add_argument("--stored-journeys", type=int, default=0, help="journeys stored before the run")
    ingest.add_argument("--no-fsync", action="store_true",
                        help="embedded NATS flushes every 2 min, not per write")
    ingest.add_argument("--nats-auth", choices=("on", "off"), default="on",
                        help="embedded NATS without authentication: to measure what it costs, never to run")
    ingest.add_argument("--rounds", type=int, default=3,
                        help="alternated rounds of each side (bare, backend, bare...), medians taken")
    ingest.add_argument("--deadline", type=float, default=300.0,
                        help="seconds any side may take to commit every event before the run fails")
    ingest.add_argument("--before", type=Path, default=None,
                        help="another checkout (e.g. `git worktree add /tmp/before main`) whose backend is"
                             " measured too, in the same rounds: before and after in one run")
    ingest.add_argument("--site-subjects", action="store_true",
                        help="every event on its site's subject, as connectors limited to sites publish: each"
                             " is applied for its site alone")
    ingest.set_defaults(run=_bench)
    live = bench_kinds.add_parser("live",
                                  help="live websocket latency, fan-out and memory against bare floors")
    live.add_argument("--clients", type=int, default=100, help="latency: clients, each scoped to one site")
    live.add_argument("--sites", type=int, default=50, help="latency: sites the events spread over")
    live.add_argument("--rate", type=float, default=1000, help="latency: events per second")
    live.add_argument("--seconds", type=float, default=5)
    live.add_argument("--fanout-clients", type=int, default=100, help="throughput: clients watching one site")
    live.add_argument("--updates", type=int, default=3000, help="throughput: updates put on the bus")
    live.add_argument("--keys", type=int, default=1000,
                      help="throughput: distinct keys the updates cycle over")
    live.add_argument("--rounds", type=int, default=3,
                      help="throughput: alternated rounds of each, medians taken")
    live.add_argument("--idle", type=int, default=500, help="memory: idle connections opened")
    live.add_argument("--no-fsync", action="store_true",
                      help="embedded NATS flushes every 2 min, not per write")
    live.set_defaults(run=_bench_live)
    publish = bench_kinds.add_parser("publish",
                                     help="connector publish rate against a bare nats-py async loop")
    publish.add_argument("--events", type=int, default=50_000)
    publish.add_argument("--max-in-flight", type=int, default=1000)
    publish.add_argument("--no-fsync", action="store_true",
                         help="embedded NATS flushes every 2 min, not per write")
    publish.set_defaults(run=_bench_publish)

    chaos = commands.add_parser("chaos",
                                help="kill backends, Postgres and NATS under load; check nothing is lost")
    chaos.add_argument("--events", type=int, default=100_000)
    chaos.add_argument("--kills", type=int, default=20)
    chaos.add_argument("--seed", type=int)
    chaos.set_defaults(run=_chaos)

    add_connector_commands(commands)

    nats_cmd = commands.add_parser("nats", help="NATS authentication for a deployment (CONTRACT section 8)")
    nats_kinds = nats_cmd.add_subparsers(dest="nats", required=True)
    init = nats_kinds.add_parser("init", help="the operator, accounts, server includes, backend credentials")
    init.add_argument("--issuer", required=True,
                      help="the issuer's folder: seeds, never mounted into a server")
    init.add_argument("--server-dir", required=True,
                      help="where auth.conf and cluster.conf go (the servers')")
    init.add_argument("--resolver-dir", default="/data/accounts", help="the servers' account folder")
    init.add_argument("--routes", default="", help="every node's host:port for routes, comma-separated")
    init.add_argument("--backend-creds", required=True, help="the backend's credentials file")
    init.add_argument("--profiles", default="", help="the folder for connector profiles")
    init.add_argument("--profiles-for", default="", help="systems to issue a connector profile for")
    init.add_argument("--nats-url", default="nats://127.0.0.1:4222", help="the URL written in the profiles")
    init.add_argument("--tls-names", default="",
                      help="TLS for clients and routes: the names and addresses the servers are reached by "
                           "(comma-separated), in the certificate the issuer's authority gives them")
    init.add_argument("--nats-tls-ca", help="another authority of the servers' certificates, copied into the "
                                            "profiles (default: the issuer's, with --tls-names)")
    init.add_argument("--owner", type=int, help="the uid that gets the credentials (run as root in compose)")
    init.set_defaults(run=_nats_init)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    log = load_section(LogSection)
    logs.configure(log.log_level, log.log_format)
    tracing.configure(load_section(TracingSection), service=f"switchboard-{args.command}")
    args.run(args)


if __name__ == "__main__":
    main()
