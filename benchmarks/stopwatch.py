"""Wall and CPU seconds of a benchmark's stages, and the machine's load when it ends: what
benchmarks/RESULTS.md records beside every figure (shared by the pipeline scripts)."""

from __future__ import annotations

import os
import time


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system, all threads)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Stopwatch:
    """Wall and CPU seconds of named stages."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.t0 = time.perf_counter()

    def start(self) -> None:
        self._t, self._c = time.perf_counter(), cpu_seconds()

    def stop(self, name: str) -> float:
        self.wall[name] = time.perf_counter() - self._t
        self.cpu[name] = cpu_seconds() - self._c
        return self.wall[name]

    def as_dict(self) -> dict:
        return {"wall_s": {k: round(v, 1) for k, v in self.wall.items()},
                "cpu_s": {k: round(v, 1) for k, v in self.cpu.items()},
                "total_wall_s": round(time.perf_counter() - self.t0, 1),
                "load_average_end": [round(v, 2) for v in os.getloadavg()]}

    def lines(self) -> list[str]:
        d = self.as_dict()
        return ["wall (s): " + ", ".join(f"{k} {v:.0f}" for k, v in d["wall_s"].items())
                + f"; total {d['total_wall_s']:.0f}",
                "CPU (s, all threads): " + ", ".join(f"{k} {v:.0f}" for k, v in d["cpu_s"].items()),
                "load average at the end (1, 5, 15 min): " + ", ".join(f"{v:.1f}" for v in d["load_average_end"])]
