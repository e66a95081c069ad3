"""One plugin wires the app: routes, auth, problem details, metrics, OpenAPI and the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable

import asyncpg
from litestar import Litestar, Router
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.plugins import InitPluginProtocol
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from litestar.plugins.prometheus import PrometheusConfig
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import Scope

from backend import db, messaging
from backend.alerts.controllers import AlertController
from backend.alerts.delivery import AlertDelivery
from backend.alerts.engine import AlertEngine
from backend.alerts.rules import AlertRulesError, load_alert_rules
from backend.alerts.settings import check_alert_webhooks
from backend.audit.controllers import AuditController
from backend.auth import PUBLIC, MissingSigningSecret, authorize, check_secrets, jwks_keys, jwt_auth
from backend.commands.controllers import CommandController
from backend.commands.relay import CommandRelay, DeliveryPolicy
from backend.failures.controllers import FailureController
from backend.fallbacks.controllers import FallbackController
from backend.ingest import partitions
from backend.ingest.consumer import ApplyWorker
from backend.ingest.controllers import IngestController
from backend.ingest.own_events import signing_key
from backend.ingest.validate import trust_of
from backend.integrations.controllers import IntegrationController
from backend.integrations.monitor import IntegrationMonitor
from backend.integrations.pace import PacePolicy
from backend.journeys.controllers import JourneyController
from backend.jwks import JwksKeys
from backend.live.bus import LiveBus
from backend.live.controllers import live_socket
from backend.live.handshake import QueryTokenMiddleware
from backend.live.hub import LiveHub
from backend.live.service import LiveService
from backend.operations.controllers import OperationsController
from backend.rate_limits import forget_expired_counts, rate_limits
from backend.reconciliation.controllers import ReconciliationController
from backend.reconciliation.scheduler import Reconciler
from backend.reports.controllers import ReportController
from backend.reports.job import run_reports
from backend.resources import Resources
from backend.retention.job import run_retention
from backend.retention.services import RetentionPolicy, check_audit_floor
from backend.routing.controllers import RuleController
from backend.routing.rules import DEFAULT_RULES, RulesFileError, load_rules
from backend.settings import BackendSettings
from backend.sites.config import SitesError, load_sites
from backend.sites.controllers import FloorActionController, SiteController
from backend.system.controllers import MetricsController, SystemController
from backend.system.sampler import MetricsSampler
from backend.webhooks.controllers import WebhookController
from switchboard.events import SEED_SYSTEMS
from switchboard.waits import stop_tasks

log = logging.getLogger("switchboard.backend")


class SwitchboardPlugin(InitPluginProtocol):
    def __init__(self, settings: BackendSettings) -> None:
        if not (settings.database.database_url and settings.bus.nats_url):
            raise RuntimeError("set SWITCHBOARD_DATABASE_URL and SWITCHBOARD_NATS_URL (or run `switchboard"
                               " demo`)")
        self.settings = settings
        try:
            self.rules = load_rules(settings.routing.rules_file or DEFAULT_RULES, _command_targets(settings))
        except RulesFileError as exc:
            raise SystemExit(f"switchboard backend not started: {exc}") from exc
        try:
            self.retention = RetentionPolicy.from_settings(settings)
            check_secrets(settings)
            settings.webhooks.check()
            self.jwks = jwks_keys(settings)
            self.sites = load_sites(settings.sites)
            _check_per_site(settings)
        except (ValueError, MissingSigningSecret, SitesError, OSError) as exc:
            raise SystemExit(f"switchboard backend not started: {exc}") from exc
        self.alerts = settings.alerts
        try:
            self.alert_rules = load_alert_rules(self.alerts.alert_rules_file)
            check_alert_webhooks(self.alerts)
        except (OSError, SitesError, AlertRulesError, ValueError) as exc:
            raise SystemExit(f"switchboard backend not started: {exc}") from exc

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        settings = self.settings
        jwks_task = await _keep_keys_fresh(self.jwks) if self.jwks else None
        pool = await db.create_pool(settings.database.database_url)  # type: ignore[arg-type]
        async with pool.acquire() as conn:
            applied = await db.migrate_with_owner(conn, settings.database.database_owner_url)
            await check_audit_floor(conn, self.retention)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        await partitions.ensure_partitions(pool)
        nc = await messaging.connect(settings.bus.nats_url,  # type: ignore[arg-type]
                                     "switchboard-backend", settings.bus.nats_creds,
                                     tls_ca=settings.bus.nats_tls_ca)
        js = nc.jetstream()
        streams = settings.streams
        await messaging.ensure_streams(js, streams.duplicate_window_s, streams.stream_replicas,
                                       max_age_s=streams.stream_max_age_s,
                                       systems=_command_targets(settings),
                                       per_site=frozenset(settings.commands.commands_per_site))
        # the live bus's own connection: what it publishes reaches this replica's hub directly, not again
        hub: LiveHub | None = None

        def resync_live() -> None:  # the connection is made before the hub it tells that the bus is back
            if hub is not None:
                hub.resync()

        live_nc = await messaging.connect(settings.bus.nats_url,  # type: ignore[arg-type]
                                          "switchboard-backend-live", settings.bus.nats_creds,
                                          tls_ca=settings.bus.nats_tls_ca, echo=False,
                                          on_reconnected=resync_live)
        hub = LiveHub(live_nc)
        bus = LiveBus(live_nc, hub)
        resources = Resources(settings=settings, rules=self.rules, pool=pool, nc=nc, js=js, sites=self.sites,
                              live=bus)
        app.state.resources = resources
        app.state.alert_rules = self.alert_rules
        live = app.state.live = LiveService(hub, pool, bus, self.sites)
        await live.start()
        ingest, commands, integrations = settings.ingest, settings.commands, settings.integrations
        worker = ApplyWorker(nc, pool, bus=bus, rules=self.rules, batch=ingest.apply_batch,
                             max_bytes=ingest.max_event_bytes,
                             known_systems=resources.known_systems, on_applied=live.on_applied,
                             own_events_key=signing_key(settings), trust=trust_of(ingest))
        relay = CommandRelay(pool, js, bus, DeliveryPolicy(
            answer_timeout_s=commands.command_answer_timeout_s, backoff_s=commands.command_backoff_s,
            backoff_max_s=commands.command_backoff_max_s, max_attempts=commands.command_max_attempts,
        ), PacePolicy.from_section(integrations), interval_s=commands.command_relay_interval_s,
            heartbeat_interval_s=integrations.heartbeat_interval_s,
            per_site=frozenset(commands.commands_per_site))
        monitor = IntegrationMonitor(pool, js, bus, _command_targets(settings),
                                     interval_s=integrations.integration_check_interval_s,
                                     figures_interval_s=integrations.integration_figures_interval_s,
                                     heartbeat_interval_s=integrations.heartbeat_interval_s)
        sampler = MetricsSampler(pool, js, interval_s=settings.system.metrics_sample_interval_s)
        reconciler = app.state.reconciler = Reconciler(resources)
        tasks = [asyncio.create_task(relay.run(), name="command-relay"),
                 asyncio.create_task(worker.run_forever(), name="apply-worker"),
                 asyncio.create_task(monitor.run(), name="integration-monitor"),
                 asyncio.create_task(sampler.run(), name="metrics-sampler"),
                 asyncio.create_task(partitions.keep_partitions(pool), name="event-partitions"),
                 asyncio.create_task(reconciler.run_forever(), name="reconciler"),
                 asyncio.create_task(forget_expired_counts(app), name="rate-limit-counts")]
        tasks += self._alert_tasks(pool, bus)
        reports = settings.reports
        if reports.reports_interval_s > 0:
            tasks.append(asyncio.create_task(run_reports(pool, self.sites, reports.reports_interval_s),
                                             name="daily-reports"))
        if jwks_task is not None:
            tasks.append(jwks_task)
        if settings.retention.retention_interval_s > 0:
            tasks.append(asyncio.create_task(run_retention(pool, self.retention,
                                                           settings.retention.retention_interval_s),
                                             name="retention"))
        # what start-up made (modules, the app, pools) lives as long as the process: a full collection
        # walking it all again froze the event loop for 60-130 ms, the live feed's worst latencies
        gc.freeze()
        try:
            yield
        finally:
            await stop_tasks(tasks)
            # each step bounded: a stop must never hang (unacknowledged messages are redelivered anyway)
            await _bounded("reconciliation runs", reconciler.stop())
            await _bounded("live service", live.stop())
            await _bounded("NATS connection", nc.close())
            await _bounded("live NATS connection", live_nc.close())
            if not await _bounded("Postgres pool", pool.close()):
                pool.terminate()

    def _alert_tasks(self, pool: asyncpg.Pool, bus: LiveBus) -> list[asyncio.Task[None]]:
        section = self.alerts
        engine = AlertEngine(pool, bus, self.alert_rules, self.sites, webhooks=section.alert_webhooks,
                             interval_s=section.alert_check_interval_s)
        tasks = [asyncio.create_task(engine.run(), name="alert-engine")]
        if section.alert_webhooks and section.alert_webhook_secret:
            delivery = AlertDelivery(pool, receivers=section.alert_webhooks,
                                     secret=section.alert_webhook_secret,
                                     retry_s=tuple(float(s) for s in section.alert_webhook_retry_s),
                                     allow_private=section.alert_webhook_allow_private,
                                     interval_s=section.alert_delivery_interval_s)
            tasks.append(asyncio.create_task(delivery.run(), name="alert-delivery"))
        return tasks

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        auth = jwt_auth(self.settings, self.jwks)
        app_config.route_handlers.extend([
            SystemController, MetricsController, IngestController, JourneyController, OperationsController,
            FailureController, CommandController, RuleController, AuditController, WebhookController,
            IntegrationController, FallbackController, ReconciliationController, SiteController,
            FloorActionController, AlertController, ReportController, live_socket,
        ])
        app_config.lifespan.append(self.lifespan)
        app_config.after_exception.append(_log_server_error)
        app_config.guards.append(authorize)
        app_config.dependencies["resources"] = Provide(_resources, sync_to_thread=False)
        # HTTP only: a websocket is one "request" lasting hours; the live metrics count what happens on it
        app_config.middleware.append(PrometheusConfig(app_name="switchboard", prefix="switchboard_http",
                                                      group_path=True, exclude=["/metrics"],
                                                      scopes={ScopeType.HTTP}).middleware)
        app_config = auth.on_app_init(app_config)
        # inside the JWT middleware, so that ingest is limited per authenticated system
        app_config.middleware.extend(rate_limits(self.settings.rate_limits))
        # outermost, ahead of the JWT middleware: a browser's websocket brings its token as `?token=`
        app_config.middleware.insert(0, QueryTokenMiddleware)
        app_config.plugins.append(ProblemDetailsPlugin(ProblemDetailsConfig(
            enable_for_all_http_exceptions=True,
            exception_to_problem_detail_map={**dict.fromkeys(_UNSTORABLE_TEXT, _unstorable_text),
                                             Exception: _internal_error})))
        app_config.openapi_config = OpenAPIConfig(
            title="Switchboard", version="1",
            openapi_router=Router(path="/schema", route_handlers=[], opt=PUBLIC),
            description="Live operational state of customer journeys. See CONTRACT.md.",
        )
        return app_config


async def _keep_keys_fresh(jwks: JwksKeys, first_fetch_s: float = 5.0) -> asyncio.Task[None]:
    """The first fetch before serving (bounded: a provider down at start costs 401s until it is back, not the
    start), then the background refreshes."""
    fetched = False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(first_fetch_s):
            fetched = await jwks.refresh()
    if not fetched:
        log.warning("no keys from the identity provider yet: tokens are refused until it answers")
    return asyncio.create_task(jwks.run(), name="jwks-refresh")


async def _bounded(what: str, step: Awaitable[None], timeout_s: float = 5.0) -> bool:
    """Await one shutdown step; after `timeout_s`, or if it fails, say which, and go on."""
    try:
        async with asyncio.timeout(timeout_s):
            await step
    except TimeoutError:
        log.warning("shutdown: %s did not close within %.0fs; going on without it", what, timeout_s)
        return False
    except Exception as exc:  # noqa: BLE001 - e.g. NATS closing a connection its server already dropped
        log.warning("shutdown: %s failed to close (%s: %s); going on without it", what, type(exc).__name__,
                    exc)
        return False
    return True


def _unstorable_text(_: asyncpg.PostgresError) -> ProblemDetailsException:
    # a NUL (U+0000) in a query, path or body value reaches Postgres, which cannot hold it: the client's input
    return ProblemDetailsException(status_code=HTTP_400_BAD_REQUEST,
                                   detail="a value holds a character (U+0000)"
                                   " that cannot be stored or searched for")


def _internal_error(_: Exception) -> ProblemDetailsException:
    # a problem document like every other error (CONTRACT.md), saying nothing of the cause: that is logged
    return ProblemDetailsException(status_code=HTTP_500_INTERNAL_SERVER_ERROR,
                                   detail="an internal error; the server's log has its cause")


# text Postgres cannot store (a NUL): the caller's mistake, answered 400 by `_unstorable_text`
_UNSTORABLE_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)


def _log_server_error(exc: Exception, scope: Scope) -> None:
    """What becomes a 500 is logged with its traceback (through our scrubbed handlers: Litestar's own
    logging config is off); refusals and bad requests are answered, not logged."""
    if isinstance(exc, _UNSTORABLE_TEXT) or (isinstance(exc, HTTPException) and exc.status_code < 500):
        return
    log.error("unhandled error answering %s %s", scope.get("method", "WS"), scope.get("path"), exc_info=exc)


def _command_targets(settings: BackendSettings) -> frozenset[str]:
    return SEED_SYSTEMS | frozenset(settings.ingest.extra_systems)


def _check_per_site(settings: BackendSettings) -> None:
    unknown = sorted(set(settings.commands.commands_per_site) - _command_targets(settings))
    if unknown:
        raise ValueError(f"SWITCHBOARD_COMMANDS_PER_SITE names {', '.join(unknown)}: not a system Switchboard"
                         " commands (the seed systems and SWITCHBOARD_EXTRA_SYSTEMS)")


def _resources(state: State) -> Resources:
    return state.resources
