"""A wall-clock stack sampler for a running server: which functions each thread spends its time in.

`start(path)` samples every thread's Python stack `hz` times a second from a daemon thread and
rewrites `path` (JSON) every few seconds: per thread, the share of samples in which each function
was on the stack (inclusive) and on top of it (exclusive). Used by bench_online.py --sample-stacks
through sampling_site/sitecustomize.py, so the API and engine-core processes are both sampled.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter, defaultdict

_TOP = 40


def _where(frame) -> str:
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{code.co_name}"


def _sample(counts: dict, tops: dict, totals: Counter, me: int) -> None:
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if ident == me:
            continue
        name = names.get(ident, str(ident))
        totals[name] += 1
        tops[name][_where(frame)] += 1
        seen = set()
        while frame is not None:
            seen.add(_where(frame))
            frame = frame.f_back
        counts[name].update(seen)


def _write(path: str, counts: dict, tops: dict, totals: Counter) -> None:
    report = {name: {"samples": n,
                     "inclusive": {k: round(v / n, 4) for k, v in counts[name].most_common(_TOP)},
                     "exclusive": {k: round(v / n, 4) for k, v in tops[name].most_common(_TOP)}}
              for name, n in totals.items()}
    with open(path + ".tmp", "w") as out:
        json.dump(report, out, indent=1)
    os.replace(path + ".tmp", path)


def start(path: str, hz: float = 100.0, flush_s: float = 3.0) -> None:
    counts, tops, totals = defaultdict(Counter), defaultdict(Counter), Counter()

    def run() -> None:
        me, last = threading.get_ident(), time.monotonic()
        while True:
            time.sleep(1.0 / hz)
            _sample(counts, tops, totals, me)
            if time.monotonic() - last > flush_s:
                _write(path, counts, tops, totals)
                last = time.monotonic()

    threading.Thread(target=run, name="stack-sampler", daemon=True).start()
