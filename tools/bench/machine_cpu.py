"""Where the machine's CPU goes while one side of a benchmark runs, by part, read from /proc.

A ratio between two sides says which is faster, not whether the slower one could catch up: these figures
say what each event costs the whole machine (the servers included), and so the rate a side would reach
if it kept every core busy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# processes counted by name, wherever they were started from (embedded or the machine's own)
SERVERS = {"postgres": "postgres", "nats-server": "nats"}
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    busy_s: float  # every core's time not idle, waiting for I/O or stolen by the hypervisor
    by_pid: dict[int, tuple[str, float]]  # each process's name and user + system seconds so far


def snapshot() -> CpuSnapshot:
    # /proc/stat's first line: user nice system idle iowait irq softirq steal ...
    user, nice, system, _idle, _iowait, irq, softirq = Path("/proc/stat").read_text().split()[1:8]
    busy = sum(int(v) for v in (user, nice, system, irq, softirq)) * _TICK_S
    by_pid: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            text = (entry / "stat").read_text()
            name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
            by_pid[int(entry.name)] = (name, (int(rest[11]) + int(rest[12])) * _TICK_S)
    return CpuSnapshot(busy, by_pid)


def spent(start: CpuSnapshot, end: CpuSnapshot, parts: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds between two snapshots: "machine" (all of it), each of `parts` (its pids), the servers by
    process name, and "other" (the rest: other processes, and those that ended in between)."""
    named = {pid: part for part, pids in parts.items() for pid in pids}
    out = dict.fromkeys([*parts, *SERVERS.values()], 0.0)
    for pid, (name, seconds) in end.by_pid.items():
        part = named.get(pid) or SERVERS.get(name)
        if part is None:
            continue
        before = start.by_pid.get(pid)
        # a pid reused by another process counts from zero
        out[part] += seconds - (before[1] if before and before[0] == name else 0.0)
    out["machine"] = end.busy_s - start.busy_s
    out["other"] = max(out["machine"] - sum(v for k, v in out.items() if k != "machine"), 0.0)
    return out
