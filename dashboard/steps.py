"""Sending a person's action (a floor action, a manual step) so that pressing again never does it twice.

Each step carries a `step_id` the backend keeps: a step whose answer never came (no answer in time, the
backend unreachable, a 5xx) keeps its id, and pressing the same step again sends it again with that id,
so the backend answers with the first step as it stands instead of doing it again. The page waits longer
than the backend waits for a step to apply, so it hears the step's real state rather than giving up at
the same moment.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from dashboard.backend_client import BackendError
from dashboard.context import Viewer

# the backend waits up to SWITCHBOARD_MANUAL_APPLY_TIMEOUT_S (10 s) for a step to apply: well past that
ACTION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Sent:
    """What became of a step: `applied`, `recorded` (in the ledger, on its way), `sent` or `ok` (a command
    to the system), `refused`, or `unanswered` (pressing again repeats it safely)."""

    status: str
    answer: dict[str, Any] | None
    problem: str | None = None

    @property
    def repeat_is_safe(self) -> bool:
        return self.status == "unanswered"


class StepSender:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self._unanswered: dict[str, str] = {}  # what was asked → the step id it was asked with

    @staticmethod
    def _intent(path: str, body: dict[str, Any]) -> str:
        return path + " " + json.dumps(body, sort_keys=True)

    def pending(self, path: str, body: dict[str, Any]) -> str | None:
        """The step id this step was last sent with and never answered, if any."""
        return self._unanswered.get(self._intent(path, body))

    async def send(self, path: str, body: dict[str, Any]) -> Sent:
        intent = self._intent(path, body)
        step_id = self._unanswered.get(intent) or uuid.uuid4().hex
        try:
            async with self.viewer.http(timeout_s=ACTION_TIMEOUT_S) as http:
                answer = await http.post(path, {**body, "step_id": step_id})
        except BackendError as exc:
            if exc.status is None or exc.status >= 500:
                self._unanswered[intent] = step_id
                return Sent("unanswered", None, str(exc))
            self._unanswered.pop(intent, None)
            return Sent("refused", None, str(exc))
        self._unanswered.pop(intent, None)
        return Sent(step_status(answer), answer)


def step_status(answer: dict[str, Any]) -> str:
    """The state an answer reports: a floor action's `status`, or a manual step's."""
    if "status" in answer:
        return str(answer["status"])
    return "applied" if answer.get("applied") else "recorded"
