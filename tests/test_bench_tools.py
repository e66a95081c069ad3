"""The benchmark tools themselves, at small sizes: they finish, and their closing JSON line holds the figures
the README quotes, each one sensible. Timing is never asserted (the machine is shared): speed is shown in
benchmarks, not tests."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tools.bench.ingest import make_events
from tools.bench.live import CollectorPauses, Latencies

REPO = Path(__file__).resolve().parent.parent


def _bench(*args: str) -> dict[str, Any]:
    """`switchboard bench ...` on embedded servers of its own (it recreates the streams it measures)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_NATS_URL", "SWITCHBOARD_NATS_CREDS")}
    done = subprocess.run([sys.executable, "-m", "tools.cli", "bench", *args], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 1" in done.stderr + done.stdout or "latency" in done.stderr  # progress shown while running
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(figures, dict)
    return figures


@pytest.mark.timeout(600)
def test_bench_ingest_reports_alternated_rounds_against_a_pipelined_baseline() -> None:
    # this checkout as the "before" side too: the option runs another checkout's backend in the same rounds
    figures = _bench("ingest", "--events", "1500", "--batch", "100", "--rounds", "3", "--replicas", "2",
                     "--stored-journeys", "200", "--deadline", "120", "--before", str(REPO))
    assert figures["baseline"] == "pipelined"
    assert figures["nats_fsync"] == "always"
    assert figures["rounds"] == 3 and figures["stored_journeys"] == 200
    for key in ("events_per_s_rounds", "baseline_events_per_s_rounds", "ratio_rounds",
                "events_per_s_2_replicas_rounds"):
        rounds = figures[key]
        assert isinstance(rounds, list) and len(rounds) == 3 and all(r > 0 for r in rounds), key
    assert sorted(figures["events_per_s_rounds"])[1] == figures["events_per_s"]
    ratio = figures["events_per_s"] / figures["baseline_events_per_s"]
    assert 0 < figures["ratio"] < 10 and 0 < ratio < 10
    assert figures["events_per_cpu_s"] > 0 and figures["replica_cpu_efficiency"] > 0
    assert figures["before"] == str(REPO)
    before_rounds = figures["before_events_per_s_rounds"]
    assert isinstance(before_rounds, list) and len(before_rounds) == 3 and all(r > 0 for r in before_rounds)
    assert len(figures["speedup_rounds"]) == 3 and figures["speedup"] > 0
    # where the machine's CPU went, per event, on each side (counted in clock ticks: in windows this short a
    # server may have used less than one)
    per_event = figures["cpu_us_per_event"]
    assert set(per_event) == {"baseline", "backend", "before"}
    assert per_event["baseline"]["consumer"] > 0 and per_event["backend"]["backend"] > 0
    assert all(parts["machine"] > 0 for parts in per_event.values())
    assert sum(parts["postgres"] + parts["nats"] for parts in per_event.values()) > 0
    assert 0 < figures["ratio_ceiling"] < 100
    assert all(0 < cores <= (os.cpu_count() or 1) + 0.5 for cores in figures["cores_busy"].values())


@pytest.mark.timeout(600)
def test_bench_ingest_on_site_subjects_applies_every_event_for_its_site() -> None:
    """As connectors limited to sites publish: the run ends only once every event is stored as applied."""
    subjects = [(subject, msgspec.json.decode(body)["data"]["site"]) for subject, body, _ in make_events(50,
                site_subjects=True)]
    assert all(subject.endswith(f".{site}") and subject.count(".") == 5 for subject, site in subjects)
    figures = _bench("ingest", "--events", "600", "--batch", "100", "--rounds", "1", "--site-subjects",
                     "--deadline", "120")
    assert figures["site_subjects"] is True and figures["events_per_s"] > 0


@pytest.mark.timeout(600)
def test_bench_live_counts_every_frame_and_the_rate_achieved() -> None:
    figures = _bench("live", "--clients", "10", "--sites", "5", "--rate", "100", "--seconds", "1",
                     "--fanout-clients", "5", "--updates", "100", "--keys", "50", "--rounds", "1",
                     "--idle", "5")
    assert figures["nats_fsync"] == "always"
    assert figures["missing_updates"] == 0
    # 100 events over 5 sites, 10 clients two per site: each event reaches two clients
    assert figures["e2e_frames_expected"] == figures["e2e_frames_delivered"] == 200
    assert figures["live_path_frames_expected"] == figures["live_path_frames_delivered"] == 200
    assert 0 < figures["events_per_s"] <= 1.5 * figures["events_per_s_requested"]
    assert figures["e2e_p50_ms"] <= figures["e2e_p99_ms"]
    assert (figures["client_gc_pauses"] == 0) == (figures["client_gc_pause_max_ms"] == 0)


@pytest.mark.timeout(600)
def test_bench_publish_says_how_nats_stores() -> None:
    figures = _bench("publish", "--events", "600", "--max-in-flight", "100")
    assert figures["nats_fsync"] == "always"
    assert figures["publish_per_s"] > 0 and figures["baseline_per_s"] > 0


@pytest.mark.timeout(600)
def test_bench_statements_times_every_statement_of_a_batch_against_the_bare_insert() -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_NATS_URL", "SWITCHBOARD_NATS_CREDS")}
    command = [sys.executable, "-m", "tools.bench.statements", "--events", "1200", "--batch", "200"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batches of both sides: 1,200/1,200" in done.stderr  # progress shown while running
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    backend, bare = figures["backend_us_per_event"], figures["bare_us_per_event"]
    assert set(backend) == {"BEGIN", "claim", "resolve", "write", "COMMIT", "Python", "whole batch"}
    assert all(micros > 0 for micros in [*backend.values(), *bare.values()]), figures
    postgres = backend["whole batch"] - backend["Python"]
    assert figures["postgres_us_per_event"] == pytest.approx(postgres, abs=0.2)
    assert 0 < figures["postgres_ratio"] == pytest.approx(
        bare["insert and COMMIT"] / figures["postgres_us_per_event"], abs=0.002)


async def test_bench_live_lets_finished_publishes_go() -> None:
    """A client that held every finished publish walked them all in each full garbage collection, which
    grew with the run (165 ms after three minutes); its readers counted those pauses as the backend's."""
    timing = Latencies([], clients=1, sites=1)
    tasks: list[weakref.ref[asyncio.Task[Any]]] = []
    still_held: list[int] = []

    async def publish_one(n: int, site: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(weakref.ref(task))
        if n == 199:  # the last: every earlier one but the newest few has finished by now
            still_held.extend(i for i, ref in enumerate(tasks[:150]) if ref() is not None)
            timing.done.set()  # no clients here: nothing to wait for

    paced = await timing.paced("test", 200, 2000.0, publish_one)
    assert len(tasks) == 200 and paced.missing == 200
    assert still_held == []


async def test_bench_live_fails_when_a_publish_fails() -> None:
    timing = Latencies([], clients=1, sites=1)

    async def publish_one(n: int, site: str) -> None:
        if n == 3:
            raise ConnectionError("publish 3 was refused")
        if n == 9:
            timing.done.set()

    with pytest.raises(ConnectionError, match="publish 3 was refused"):
        await timing.paced("test", 10, 1000.0, publish_one)


def test_bench_live_counts_the_clients_own_full_collections() -> None:
    with CollectorPauses() as pauses:
        gc.collect(1)  # a young one: not a pause the figure counts
        gc.collect()
    gc.collect()  # after the window: not counted either
    assert len(pauses.seconds) == 1 and pauses.seconds[0] > 0
