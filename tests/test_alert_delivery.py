"""Alert webhooks through their durable queue: a backend killed between two attempts loses nothing (the
next one delivers, once), and a receiver on a private address is refused unless allowed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from standardwebhooks.webhooks import Webhook

from backend.alerts.services import receiver_digest, shown_target
from tests.support.backends import Stack, backend_env, own_stack
from tests.support.events import cloud_event, publish
from tests.support.waits import eventually
from tests.support.webhook_receiver import ALERT_RULES, ALERT_SECRET, Receiver, webhook_receiver
from tools.backend_process import BackendProcess


def _env(folder: Path, receiver: Receiver, **extra: str) -> dict[str, str]:
    (folder / "rules.toml").write_text(ALERT_RULES)
    (folder / "sites.toml").write_text("[defaults]\nwait_target_s = 60\n")
    return {"SWITCHBOARD_ALERT_RULES_FILE": str(folder / "rules.toml"),
            "SWITCHBOARD_SITES_FILE": str(folder / "sites.toml"), "SWITCHBOARD_ALERT_CHECK_INTERVAL_S": "0.3",
            "SWITCHBOARD_ALERT_WEBHOOKS": receiver.url, "SWITCHBOARD_ALERT_WEBHOOK_SECRET": ALERT_SECRET,
            "SWITCHBOARD_ALERT_DELIVERY_INTERVAL_S": "0.2", **extra}


async def _raise_one(stack: Stack, site: str) -> int:
    await publish(stack.js, cloud_event("customer.arrived", f"queue:K-{site}", {"site": site},
                                        time=datetime.now(UTC) - timedelta(minutes=5)))
    return await eventually(lambda: stack.pool.fetchval(
        "SELECT id FROM alerts WHERE subject = $1", site))


async def test_an_alert_webhook_survives_a_backend_killed_between_attempts(server_urls, workdir, uid):
    folder = workdir / f"alert-restart-{uid}"
    folder.mkdir()
    with webhook_receiver(fail_first=1) as receiver:
        env = _env(folder, receiver, SWITCHBOARD_ALERT_WEBHOOK_RETRY_S="4",
                   SWITCHBOARD_ALERT_WEBHOOK_ALLOW_PRIVATE="true")
        async with own_stack(server_urls["database_url"], folder, env) as stack:
            alert = await _raise_one(stack, f"k-{uid}")
            await eventually(lambda: asyncio.sleep(0, [r.answered for r in receiver.requests] == [503]))
            stack.backend.kill()  # a crash while the retry waits its 4 seconds
            replacement = BackendProcess({**backend_env(stack.settings), **env},
                                         folder / f"backend-{uuid.uuid4().hex[:8]}.log")
            stack.backends.append(replacement)
            await asyncio.to_thread(lambda: replacement.start().wait_ready())
            await eventually(lambda: stack.pool.fetchval(
                "SELECT status = 'delivered' FROM alert_deliveries WHERE alert_id = $1", alert))
            assert [r.answered for r in receiver.requests] == [503, 204]
            first, second = receiver.requests
            assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_alert_{alert}_raised"
            assert Webhook(ALERT_SECRET).verify(second.body, second.headers)["type"] == "alert.raised"
            assert await stack.pool.fetchval("SELECT attempts FROM alert_deliveries WHERE alert_id = $1",
                                             alert) == 2
            # found again by its digest: the receiver's URL, which may be its secret, is not kept
            row = dict(await stack.pool.fetchrow("SELECT * FROM alert_deliveries WHERE alert_id = $1", alert))
            assert row["receiver"] == receiver_digest(receiver.url)
            assert row["target"] == shown_target(receiver.url)
            assert receiver.url not in repr(row) and "/hooks" not in repr(row)


async def test_a_delivery_to_a_receiver_no_longer_configured_fails_and_is_sent_nowhere(server_urls, workdir,
                                                                                      uid):
    folder = workdir / f"alert-removed-{uid}"
    folder.mkdir()
    with webhook_receiver(fail_first=1) as removed, webhook_receiver() as kept:
        env = _env(folder, removed, SWITCHBOARD_ALERT_WEBHOOK_RETRY_S="4",
                   SWITCHBOARD_ALERT_WEBHOOK_ALLOW_PRIVATE="true")
        async with own_stack(server_urls["database_url"], folder, env) as stack:
            alert = await _raise_one(stack, f"r-{uid}")
            await eventually(lambda: asyncio.sleep(0, [r.answered for r in removed.requests] == [503]))
            stack.backend.kill()  # its receivers changed while the retry waits
            replacement = BackendProcess({**backend_env(stack.settings), **env,
                                          "SWITCHBOARD_ALERT_WEBHOOKS": kept.url},
                                         folder / f"backend-{uuid.uuid4().hex[:8]}.log")
            stack.backends.append(replacement)
            await asyncio.to_thread(lambda: replacement.start().wait_ready())
            row = await eventually(lambda: stack.pool.fetchrow(
                "SELECT status, last_error FROM alert_deliveries WHERE alert_id = $1 AND status = 'failed'",
                alert), timeout=30)
            assert row["last_error"] == "the receiver is no longer configured"
            assert len(removed.requests) == 1 and kept.requests == []


async def test_an_alert_webhook_to_a_private_address_is_refused_and_given_up(server_urls, workdir, uid):
    folder = workdir / f"alert-private-{uid}"
    folder.mkdir()
    with webhook_receiver() as receiver:
        env = _env(folder, receiver, SWITCHBOARD_ALERT_WEBHOOK_RETRY_S="0.2,0.2")
        async with own_stack(server_urls["database_url"], folder, env) as stack:
            alert = await _raise_one(stack, f"p-{uid}")
            row = await eventually(lambda: stack.pool.fetchrow(
                "SELECT status, attempts, last_error FROM alert_deliveries WHERE alert_id = $1"
                " AND status = 'failed'", alert))
            assert row["attempts"] == 3
            assert row["last_error"] == "target refused: 127.0.0.1 resolves to a non-public address"
            assert receiver.requests == []


async def test_an_alerts_end_never_reaches_a_receiver_before_its_start(server_urls, workdir, uid):
    folder = workdir / f"alert-order-{uid}"
    folder.mkdir()
    with webhook_receiver(fail_first=1, fail_only="_raised") as receiver:
        env = _env(folder, receiver, SWITCHBOARD_ALERT_WEBHOOK_RETRY_S="4",
                   SWITCHBOARD_ALERT_WEBHOOK_ALLOW_PRIVATE="true", SWITCHBOARD_LOG_LEVEL="INFO")
        async with own_stack(server_urls["database_url"], folder, env) as stack:
            site = f"o-{uid}"
            alert = await _raise_one(stack, site)
            await eventually(lambda: asyncio.sleep(0, [r.answered for r in receiver.requests] == [503]))
            # the customer is called while the start's retry waits its 4 seconds: the alert ends
            await publish(stack.js, cloud_event("ticket.called", f"queue:K-{site}",
                                                {"site": site, "counter": "1"}))
            await eventually(lambda: stack.pool.fetchval(
                "SELECT count(*) = 2 FROM alert_deliveries WHERE alert_id = $1 AND status = 'delivered'",
                alert))
            assert [(r.headers["webhook-id"], r.answered) for r in receiver.requests] == [
                (f"msg_alert_{alert}_raised", 503), (f"msg_alert_{alert}_raised", 204),
                (f"msg_alert_{alert}_resolved", 204)]
            # the receiver's URL (its path may be its credential) is in no log line, at the default INFO
            assert not [b for b in stack.backends if receiver.url in b.log_path.read_text()]


async def test_a_receiver_that_answers_late_holds_up_no_other(server_urls, workdir, uid):
    folder = workdir / f"alert-slow-{uid}"
    folder.mkdir()
    with webhook_receiver(delay_s=12) as slow, webhook_receiver() as prompt:
        env = {**_env(folder, slow, SWITCHBOARD_ALERT_WEBHOOK_ALLOW_PRIVATE="true",
                      SWITCHBOARD_ALERT_WEBHOOK_RETRY_S="600"),
               "SWITCHBOARD_ALERT_WEBHOOKS": f"{slow.url},{prompt.url}"}
        async with own_stack(server_urls["database_url"], folder, env) as stack:
            alert = await _raise_one(stack, f"s-{uid}")
            raised = asyncio.get_running_loop().time()
            await eventually(lambda: asyncio.sleep(0, len(prompt.requests) == 1))
            assert asyncio.get_running_loop().time() - raised < 8  # not after the slow one's 10 s
            # the slow one's attempt is cut at 10 s and waits for its retry
            row = await eventually(lambda: stack.pool.fetchrow(
                "SELECT attempts, last_error FROM alert_deliveries WHERE alert_id = $1 AND receiver = $2"
                " AND last_error IS NOT NULL", alert, receiver_digest(slow.url)), timeout=25)
            assert (row["attempts"], row["last_error"]) == (1, "no answer within 10 s")
