"""Shared benchmark helpers: fp32 matmul peak and CPU contention.

Import from a script in ``bench/`` with ``from _peak import matmul_peak`` (the
script's folder is on ``sys.path``). Result files, with the machine, the load
average and the commit, are written only through ``bench/_results.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def matmul_peak(sizes: tuple[int, ...] = (1024, 2048), runs: int = 5, min_seconds: float = 0.2,
                dtype: torch.dtype = torch.float32) -> dict:
    """Best GFLOP/s of square ``torch.mm`` in ``dtype`` (fp32 by default) over ``runs`` timed runs per size.

    At torch's current thread count. Each run multiplies two random ``s x s`` matrices enough times to
    last about ``min_seconds``; a matmul counts ``2 s^3`` FLOPs. Returns
    ``dict(gflops=best over sizes, per_size={s: best}, runs=..., threads=...)``.
    """
    per_size: dict[int, float] = {}
    for s in sizes:
        a = torch.randn(s, s, dtype=dtype)
        b = torch.randn(s, s, dtype=dtype)
        out = torch.empty(s, s, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        reps = max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-6)))
        best = 0.0
        for _ in range(runs):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=out)
            best = max(best, 2.0 * s**3 * reps / (time.perf_counter() - t0) / 1e9)
        per_size[s] = best
    return dict(gflops=max(per_size.values()), per_size=per_size, runs=runs, threads=torch.get_num_threads())


def _cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all CPUs), from /proc/stat; None if unavailable."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMonitor:
    """Measures how busy OTHER processes kept the machine's CPUs during a ``with`` block.

    ``other_load`` is the average number of CPUs used by other processes
    divided by the CPU count (0 = quiet machine, 1 = every CPU busy elsewhere);
    None where /proc/stat is not available.
    """

    def __enter__(self) -> "CpuMonitor":
        self._busy, self._own, self._t = _cpu_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        self.other_load: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        busy = _cpu_busy_seconds()
        if busy is None or self._busy is None:
            return
        wall = max(time.perf_counter() - self._t, 1e-9)
        others = (busy - self._busy) - (_own_cpu_seconds() - self._own)
        self.other_load = max(0.0, others) / (wall * (os.cpu_count() or 1))


def wait_for_quiet_cpu(threshold: float = 0.1, timeout: float = 600.0, window: float = 2.0) -> float | None:
    """Wait until other processes use less than ``threshold`` of the CPUs over ``window`` seconds.

    Benchmarks on a shared machine are meaningless while something else runs.
    Returns the last measured load (None without /proc/stat); gives up after
    ``timeout`` seconds and returns the load then.
    """
    deadline = time.monotonic() + timeout
    while True:
        with CpuMonitor() as mon:
            time.sleep(window)
        if mon.other_load is None or mon.other_load < threshold or time.monotonic() > deadline:
            return mon.other_load
