"""MpLauncher: the tensor-parallel workers of one host as spawned processes, one per device."""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from typing import Any

from tokenmill.parallel.rank_setup import RankSpec

log = logging.getLogger(__name__)


class MpLauncher:
    """Spawns ranks 1..N-1 on this host; each reports a start-up or step error through a pipe."""

    name = "mp"

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")  # fork would copy the engine's threads and device state
        self._procs: dict[int, Any] = {}
        self._pipes: dict[int, Any] = {}
        self._errors: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def host(self) -> str:
        return "127.0.0.1"

    def local_rank(self, rank: int) -> int:
        return rank

    def ranks_on_driver_host(self, world_size: int) -> int:
        return world_size

    def launch(self, specs: list[RankSpec]) -> None:
        for spec in specs:
            parent, child = self._ctx.Pipe(duplex=False)
            proc = self._ctx.Process(target=worker_main, args=(spec, spec.world_size, child), daemon=True,
                                     name=f"tokenmill-tp-rank{spec.rank}")
            proc.start()
            child.close()
            self._procs[spec.rank], self._pipes[spec.rank] = proc, parent

    def pids(self) -> dict[int, int]:
        return {rank: proc.pid for rank, proc in self._procs.items()}

    def failures(self) -> dict[int, str]:
        """rank -> what went wrong, for every worker that reported an error or exited unasked."""
        with self._lock:
            self._read_reports()
            out = dict(self._errors)
            if self._stopped:
                return out
            for rank, proc in self._procs.items():
                if rank not in out and not proc.is_alive():
                    out[rank] = f"(pid {proc.pid}) died: {_exit_text(proc.exitcode)}"
            return out

    def _read_reports(self) -> None:
        for rank, pipe in self._pipes.items():
            try:
                while pipe.poll():
                    self._errors[rank] = f"(pid {self._procs[rank].pid}) failed: {pipe.recv()}"
            except (EOFError, OSError):
                continue  # the worker is gone; its exit code tells the rest

    def stop(self, timeout_s: float) -> None:
        """Let the workers exit for `timeout_s` (they were told to stop, or their peer is gone), then kill them."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        deadline = time.monotonic() + timeout_s
        for proc in self._procs.values():
            proc.join(max(deadline - time.monotonic(), 0.0))
        for proc in self._procs.values():
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)


    def close(self) -> None:
        """Nothing beyond the processes `stop` ended."""


def worker_main(spec: RankSpec, ranks_on_host: int, report: Any) -> None:
    """A spawned worker's entry point: start, serve steps, and report any error before exiting."""
    from tokenmill.parallel.worker_loop import run_worker, start_worker

    logging.basicConfig(level=spec.log_level, format=f"%(asctime)s tp-rank{spec.rank} %(levelname)s %(message)s")
    try:
        state = start_worker(spec, ranks_on_host)
        run_worker(state, spec.args)
    except BaseException as exc:
        try:
            report.send(f"{type(exc).__name__}: {_first_line(exc)}")
        except OSError:
            pass  # the driver is gone
        raise SystemExit(1) from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
