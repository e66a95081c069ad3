"""The short chaos run CI keeps: SIGKILLed replicas and killed servers lose and double nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_chaos_short_run_loses_nothing_and_applies_nothing_twice():
    run = subprocess.run(
        [sys.executable, "-m", "switchboard.cli", "chaos", "--events", "5000", "--kills", "3", "--seed", "11"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert figures["acknowledged"] == figures["published"] == 5000
    assert figures["applied"] == 5000
    assert (figures["lost"], figures["applied_twice"], figures["mismatched_journeys"]) == (0, 0, 0)
    assert figures["duplicates_suppressed"] > 0, "the run's resends and redeliveries were recognised"
    assert "killed postgres" in run.stderr and "killed nats" in run.stderr
    assert run.stderr.count("killed backend") == 3
