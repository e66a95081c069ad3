"""The benchmarks' CPU accounting, against real processes."""

from __future__ import annotations

import subprocess
import sys

from tools.bench import machine_cpu

SPIN = "import sys, time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


def test_a_busy_process_is_counted_in_its_part_and_one_that_ended_in_the_rest() -> None:
    start = machine_cpu.snapshot()
    ended = subprocess.Popen([sys.executable, "-c", SPIN.format(s=0.3)])
    assert ended.wait(timeout=10) == 0
    running = subprocess.Popen([sys.executable, "-c", SPIN.format(s=0.4) + "print('spun', flush=True)\n"
                                "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    with running:
        try:
            assert running.stdout is not None and running.stdout.readline() == "spun\n"
            end = machine_cpu.snapshot()
        finally:
            running.kill()
    spent = machine_cpu.spent(start, end, {"running": [running.pid], "ended": [ended.pid]})
    assert 0.4 <= spent["running"] <= 1.0  # its spin and its interpreter's start
    assert spent["ended"] == 0.0
    assert spent["other"] >= 0.3  # the process that ended between the snapshots, and this one
    assert spent["machine"] >= spent["running"] + spent["other"] - 0.05


def test_a_pid_taken_by_another_process_counts_from_zero() -> None:
    start = machine_cpu.CpuSnapshot(10.0, {42: ("postgres", 5.0), 43: ("nats-server", 1.0)})
    end = machine_cpu.CpuSnapshot(12.0, {42: ("python3", 0.5), 43: ("nats-server", 1.25),
                                         44: ("postgres", 0.2)})
    spent = machine_cpu.spent(start, end, {"backend": [42]})
    assert spent == {"backend": 0.5, "postgres": 0.2, "nats": 0.25, "machine": 2.0, "other": 1.05}
