"""Per-phase host time and a step timeline of the engine-core process, for bench_online.py --sample-stacks.

`install(path)` wraps EngineLoop's phases (drain commands, step, send outputs) in the engine-core
process and rewrites `path` (JSON) every few seconds: seconds per phase, and each step's start
time (time.time(), comparable with the client's), duration and tokens scheduled.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_engine_overhead import PhaseTimer  # noqa: E402


def _engine_loop_class():
    """EngineLoop of the running process: `python -m` runs core_proc as __main__, a module of its own."""
    while True:
        loop = getattr(sys.modules.get("__main__"), "EngineLoop", None)
        if loop is not None:
            return loop
        time.sleep(0.2)


def install(path: str, flush_s: float = 3.0) -> None:
    threading.Thread(target=_install, args=(path, flush_s), name="step-timeline", daemon=True).start()


def _install(path: str, flush_s: float) -> None:
    timer = PhaseTimer()
    timer.clock = time.perf_counter
    steps: list[tuple[float, float, int]] = []
    loop = _engine_loop_class()  # methods are looked up per call, so patching the class reaches the running loop
    step = loop._step

    def timed_step(self):
        wall, start = time.time(), time.perf_counter()
        before = self.core._counters["computed"]
        step(self)
        steps.append((round(wall, 4), round(time.perf_counter() - start, 5), self.core._counters["computed"] - before))

    loop._step = timed_step
    timer.wrap(loop, "_drain", "drain")
    timer.wrap(loop, "_send", "send")

    while True:
        time.sleep(flush_s)
        with open(path + ".tmp", "w") as out:
            json.dump({"seconds": dict(timer.current), "steps": steps}, out)
        os.replace(path + ".tmp", path)
