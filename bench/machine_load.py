"""How busy the rest of the machine was during a measurement: the benchmarks print it,
because on a shared machine other processes silently slow every figure."""

from __future__ import annotations

import time

import psutil


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall clock, busy CPU seconds of the whole machine, CPU seconds of this process and all
    its children, live or reaped)."""
    cpu = psutil.cpu_times()
    busy = sum(cpu) - cpu.idle - getattr(cpu, "iowait", 0.0)
    me = psutil.Process()
    mine = me.cpu_times()
    own = mine.user + mine.system + mine.children_user + mine.children_system
    for child in me.children(recursive=True):
        try:
            own += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return time.perf_counter(), busy, own


def other_share(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """Share of all CPUs that processes outside this one used between two snapshots."""
    wall, busy, own = (b - a for a, b in zip(start, end, strict=True))
    return max(0.0, busy - own) / max(wall * (psutil.cpu_count() or 1), 1e-9)


class OtherCpu:
    """A `with` block that sets `share`: the other processes' share of the CPUs meanwhile."""

    def __enter__(self) -> OtherCpu:
        self._start = cpu_snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.share = other_share(self._start, cpu_snapshot())
