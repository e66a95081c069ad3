"""The rules file: the five v1 rules, refusal of a bad file with its line, and GET /api/v1/rules."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from backend.routing.rules import DEFAULT_RULES, RulesFileError, load_rules
from switchboard.events import SEED_SYSTEMS
from tests.support.backends import backend_env
from tools.embedded import free_port

GOOD_RULE = """version = 1

[[rule]]
name = "visit-context-for-phone-bookings"
description = "booked by phone"
when.event = "appointment.booked"
when.data = { channel = "phone" }
command = "visit.context"
to = "queue"
"""


def test_the_packaged_rules_are_the_five_of_the_contract():
    rules = load_rules(DEFAULT_RULES, SEED_SYSTEMS)
    assert [(r.command, r.to) for r in rules.rules] == [
        ("visit.hold", "appointments"), ("ticket.prioritize", "queue"), ("visit.context", "queue"),
        ("staff.alert", "queue"), ("journey.summary", "crm"),
    ]


@pytest.mark.parametrize(("text", "line", "problem"), [
    (GOOD_RULE.replace('to = "queue"', 'to = "fax"'), 9, "'fax' is not a registered system"),
    (GOOD_RULE.replace('"appointment.booked"', '"appointment.teleported"'), 6, "not a journey event type"),
    (GOOD_RULE.replace("{ channel", "{ colour"), 7, "has no data field 'colour'"),
    (GOOD_RULE.replace('command = "visit.context"', 'command = "Visit Context"'), 8, "command"),
    (GOOD_RULE.replace('to = "queue"', 'to = "queue"\nretries = 3'), 10, "unknown field `retries`"),
    (GOOD_RULE.replace('when.data = { channel = "phone" }', 'when.data = { channel = "phone"'), 7,
     "not valid TOML"),
    (GOOD_RULE + GOOD_RULE.split("\n", 2)[2], 11, "used twice"),
    (GOOD_RULE.replace('when.event = "appointment.booked"\nwhen.data = { channel = "phone" }',
                       'when.state = { mood = ["good"] }'), 6, "exactly one trigger"),
])
def test_a_bad_rules_file_is_refused_with_its_line_and_problem(tmp_path, text, line, problem):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesFileError) as refused:
        load_rules(path, SEED_SYSTEMS)
    assert f"rules.toml line {line}:" in str(refused.value)
    assert problem in str(refused.value)


def test_a_backend_with_a_bad_rules_file_does_not_start(settings, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD_RULE.replace('to = "queue"', 'to = "fax"'))
    started = subprocess.run(
        [sys.executable, "-m", "tools.cli", "backend", "--port", str(free_port())],
        env={**backend_env(settings), "SWITCHBOARD_RULES_FILE": str(path)}, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert started.returncode != 0
    assert "bad.toml line 9: rule 'visit-context-for-phone-bookings': 'fax' is not a registered system" \
        in started.stderr


async def test_the_rules_in_force_are_served_to_readers_only(api: httpx.AsyncClient, token):
    floor_staff = {"Authorization": f"Bearer {token('floor_staff', ['x'])}"}
    served = await api.get("/api/v1/rules", headers=floor_staff)
    assert served.status_code == 200
    body = served.json()
    assert (body["file"], body["version"]) == ("v1.toml", 1)
    assert {r["name"]: r["command"] for r in body["items"]}["hold-visit-when-ineligible"] == "visit.hold"
    assert body["items"][0]["when"]["data"] == {"result": "failed"}
    connector = await api.get("/api/v1/rules",
                              headers={"Authorization": f"Bearer {token('connector', '*', 'queue')}"})
    assert connector.status_code == 403
    assert (await api.get("/api/v1/rules")).status_code == 401
