"""Was a timed run alone on the machine? Contamination = the CPU time that processes OUTSIDE
the run's own process tree took while it ran, plus the time the hypervisor stole, as a share
of the whole machine (wall time × cores).

    busy   = Δ(user + nice + system + irq + softirq) of the machine    (/proc/stat, "cpu")
    own    = Δ(user + system + reaped children's) of this process tree  (/proc/<pid>/stat)
    share  = (max(0, busy − own) + Δsteal) / (wall × cores)

A child reaped during the run moves its whole lifetime into its parent's children counters,
while its pre-run part was counted at the start: the difference is its in-run time, so
short-lived ffmpeg processes are counted correctly. Other sessions' processes, kernel
threads and the stolen time are what is left.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

PROC_STAT = Path("/proc/stat")
DEFAULT_LIMIT = 0.05  # the share of the machine others may take before a run is discarded


@dataclass(frozen=True)
class MachineTimes:
    """Machine-wide CPU seconds since boot, summed over all CPUs."""

    busy_s: float  # user + nice + system + irq + softirq (guest time is inside user)
    idle_s: float  # idle + iowait
    steal_s: float
    cores: int


def parse_proc_stat(text: str, ticks_per_s: float = 100.0) -> MachineTimes:
    """The aggregate ``cpu`` line of /proc/stat (in clock ticks) and the number of ``cpuN``
    lines (the machine's CPUs)."""
    lines = text.splitlines()
    agg = next((ln for ln in lines if ln.split()[:1] == ["cpu"]), None)
    if agg is None:
        raise ValueError("no aggregate 'cpu' line")
    vals = [int(x) for x in agg.split()[1:]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = vals[:8]
    cores = sum(1 for ln in lines if ln.startswith("cpu") and ln[3:4].isdigit())
    return MachineTimes(
        busy_s=(user + nice + system + irq + softirq) / ticks_per_s,
        idle_s=(idle + iowait) / ticks_per_s,
        steal_s=steal / ticks_per_s,
        cores=max(1, cores),
    )


def machine_times() -> MachineTimes:
    try:
        return parse_proc_stat(PROC_STAT.read_text(), float(os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError):  # not Linux: psutil reads the platform's counters
        t = psutil.cpu_times()
        busy = sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))
        idle = t.idle + getattr(t, "iowait", 0.0)
        return MachineTimes(busy, idle, getattr(t, "steal", 0.0), psutil.cpu_count() or 1)


def tree_cpu_s(pid: int | None = None) -> float:
    """CPU seconds of a process and every live descendant, each with its reaped children."""
    try:
        root = psutil.Process(pid or os.getpid())
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:  # exited between the listing and the read
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


@dataclass(frozen=True)
class Snapshot:
    wall: float  # time.monotonic()
    machine: MachineTimes
    own_s: float


def snapshot(pid: int | None = None) -> Snapshot:
    return Snapshot(time.monotonic(), machine_times(), tree_cpu_s(pid))


@dataclass(frozen=True)
class Contamination:
    """What others took from the machine while one run ran."""

    wall_s: float
    cores: int
    busy_s: float  # every process on every CPU
    own_s: float  # the run's own process tree
    steal_s: float

    @property
    def foreign_s(self) -> float:
        return max(0.0, self.busy_s - self.own_s)

    @property
    def foreign_share(self) -> float:
        return self.foreign_s / self.capacity_s if self.capacity_s > 0 else 0.0

    @property
    def steal_share(self) -> float:
        return self.steal_s / self.capacity_s if self.capacity_s > 0 else 0.0

    @property
    def capacity_s(self) -> float:
        return self.wall_s * self.cores

    @property
    def share(self) -> float:
        return self.foreign_share + self.steal_share

    def clean(self, limit: float = DEFAULT_LIMIT) -> bool:
        return self.share <= limit

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "foreign_pct": round(100 * self.foreign_share, 2),
            "steal_pct": round(100 * self.steal_share, 2),
            "share_pct": round(100 * self.share, 2),
        }


def between(before: Snapshot, after: Snapshot) -> Contamination:
    return Contamination(
        wall_s=after.wall - before.wall,
        cores=after.machine.cores,
        busy_s=after.machine.busy_s - before.machine.busy_s,
        own_s=after.own_s - before.own_s,
        steal_s=after.machine.steal_s - before.machine.steal_s,
    )


class Reading:
    """Filled when the measured block ends."""

    value: Contamination | None = None


@contextmanager
def watch(pid: int | None = None) -> Iterator[Reading]:
    """``with watch() as r: run()`` → ``r.value`` is that run's contamination."""
    reading = Reading()
    before = snapshot(pid)
    try:
        yield reading
    finally:
        reading.value = between(before, snapshot(pid))


def describe_busy(readings: list[Contamination], limit: float) -> str:
    """One clause for "not measurable: the machine was busy (…)"."""
    if not readings:
        return "no run was measured"
    bad = [r for r in readings if not r.clean(limit)]
    shares = sorted(100 * r.share for r in bad) or [0.0]
    steal = max(100 * r.steal_share for r in readings)
    mid = shares[len(shares) // 2]
    return (
        f"other processes took a median {mid:.0f} % of the machine in the contaminated runs, "
        f"{shares[0]:.0f}–{shares[-1]:.0f} %, steal up to {steal:.1f} %; "
        f"{len(bad)} of {len(readings)} timed runs were over the {100 * limit:g} % limit"
    )
