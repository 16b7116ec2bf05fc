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
from collections import defaultdict


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
    seconds: dict[str, float] = defaultdict(float)
    steps: list[tuple[float, float, int]] = []
    loop = _engine_loop_class()  # methods are looked up per call, so patching the class reaches the running loop

    def timed(name, inner):
        def wrapper(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(self, *args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
        return wrapper

    step = loop._step

    def timed_step(self):
        wall, start = time.time(), time.perf_counter()
        before = self.core._counters["computed"]
        step(self)
        steps.append((round(wall, 4), round(time.perf_counter() - start, 5), self.core._counters["computed"] - before))

    loop._step = timed_step
    loop._drain = timed("drain", loop._drain)
    loop._send = timed("send", loop._send)

    while True:
        time.sleep(flush_s)
        with open(path + ".tmp", "w") as out:
            json.dump({"seconds": dict(seconds), "steps": steps}, out)
        os.replace(path + ".tmp", path)
