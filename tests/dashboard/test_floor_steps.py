"""A step pressed again after its answer never came is the same step: the page repeats it with its
`step_id`, and the backend does it once (against the session's real backend)."""

from __future__ import annotations

from backend.fallbacks.config import FallbacksSection
from backend.settings import BackendSettings
from dashboard.context import Dashboard, Viewer
from dashboard.live import LiveConnection
from dashboard.session import Principal, SignIn
from dashboard.sites import SiteBook
from dashboard.steps import ACTION_TIMEOUT_S, StepSender
from tests.support import fallbacks
from tests.support.failures import bearer
from tests.support.floor import letters
from tests.support.settings import dashboard_settings
from tools.backend_process import BackendProcess
from tools.embedded import free_port


def viewer_of(settings: BackendSettings, backend_url: str, token: str) -> Viewer:
    dashboard = Dashboard(settings=dashboard_settings(settings.tokens), backend_url=backend_url, demo=False)
    return Viewer(dashboard=dashboard, browser_id="test",
                  sign_in=SignIn(access_token=token), principal=Principal.from_token(token),
                  live=LiveConnection(backend_url, token), capabilities=None, sites=SiteBook())


def test_floor_steps_wait_longer_than_the_backend_waits_for_a_step_to_apply():
    assert 2 * FallbacksSection().manual_apply_timeout_s <= ACTION_TIMEOUT_S


async def test_floor_a_step_whose_answer_was_lost_is_repeated_with_its_step_id_and_done_once(
        backend: BackendProcess, settings: BackendSettings, api, pool, token):
    site = f"steps-{letters()}"
    staff_token = token("floor_staff", [site])
    staff = bearer(token, "floor_staff", [site])
    fallback = (await fallbacks.start(api, staff, site)).json()
    path, body = f"/api/v1/fallbacks/{fallback['id']}/actions", {"action": "check_in"}
    viewer = viewer_of(settings, f"http://127.0.0.1:{free_port()}", staff_token)  # nothing answers there
    sender = StepSender(viewer)

    lost = await sender.send(path, body)
    assert lost.status == "unanswered" and lost.repeat_is_safe and lost.answer is None
    step_id = sender.pending(path, body)
    assert step_id
    # the request had in fact been done; only its answer was lost on the way back
    first = await fallbacks.act(api, staff, fallback["id"], **body, step_id=step_id)
    assert first.status_code == 201, first.text

    viewer.dashboard.backend_url = backend.url
    ledger_rows = "SELECT count(*) FROM fallback_ledger WHERE fallback_id = $1"
    again = await sender.send(path, body)
    assert again.answer is not None and again.answer["repeated"] is True
    assert ((again.status, again.answer["step_id"], again.answer["ref"])
            == ("applied", step_id, first.json()["ref"]))
    assert sender.pending(path, body) is None
    assert await pool.fetchval(ledger_rows, fallback["id"]) == 1

    another = await sender.send(path, body)  # answered steps are done: pressing again is a new check-in
    assert another.status == "applied" and another.answer and another.answer["repeated"] is False
    assert another.answer["step_id"] != step_id
    assert await pool.fetchval(ledger_rows, fallback["id"]) == 2
