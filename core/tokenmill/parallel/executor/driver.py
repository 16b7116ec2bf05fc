"""TPExecutor: the engine's side of tensor parallelism. This process is rank 0; a launcher runs the rest.

It starts the workers, brings rank 0 up alongside them, hands the engine its model shard, KV
pool and a runner that broadcasts each step, and watches the workers. A worker that dies or a
collective that fails or times out ends the executor: the failed rank is named, the remaining
workers are stopped within a bounded time, and every later step raises EngineDeadError.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from functools import partial
from typing import Any, Callable, TypeVar

import torch.distributed as dist

from tokenmill.config import EngineArgs
from tokenmill.errors import EngineDeadError
from tokenmill.parallel.executor.driver_runner import BroadcastingAllocator, DriverRunner
from tokenmill.parallel.rank_setup import (RankSpec, RankState, collective_timeout_s, init_rank,
                                          require_dist_backend, worker_threads)
from tokenmill.parallel.step_broadcast import StepSender

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 600.0  # model load and pool sizing on every rank
_DIAGNOSE_S = 2.0  # after a failed collective, how long to wait for the launcher to see which rank fell
_STOP_S = 5.0  # how long stopped workers get to exit before they are killed
_WATCH_S = 0.5  # how often the watcher looks at the workers
T = TypeVar("T")


class TPExecutor:
    """Rank 0 of `args.tensor_parallel_size` ranks, the others run by `launcher` (mp or Ray)."""

    def __init__(self, args: EngineArgs, plugins: Any, platform: Any, launcher: Any) -> None:
        self.args, self.plugins, self.platform, self.launcher = args, plugins, platform, launcher
        self.world_size = args.tensor_parallel_size
        self.failure: str | None = None  # set once a rank fell; every later call raises it
        self.state: RankState | None = None
        self.sender: StepSender | None = None
        self._workers_stopped = threading.Event()
        self._shut = False
        self._lock = threading.Lock()  # the engine's thread and the watcher may both see a failure

    # ------------------------------------------------------------------ start-up

    def start(self) -> None:
        """Launch ranks 1..N-1 and bring rank 0 up with them; a rank that fails to start raises EngineDeadError."""
        require_dist_backend(self.platform)  # before any worker starts: a refusal costs no spawn
        host = self.launcher.host()
        address = f"tcp://{host}:{_free_port(host)}"
        timeout = collective_timeout_s()
        level = logging.getLogger().getEffectiveLevel()
        specs = [RankSpec(self.args, rank, self.world_size, self.launcher.local_rank(rank), address, timeout, level)
                 for rank in range(self.world_size)]
        worker_threads(self.args, self.platform, self.launcher.ranks_on_driver_host(self.world_size))
        self.launcher.launch(specs[1:])
        self.state = self._while_watching(partial(init_rank, specs[0], self.plugins, self.platform))
        self.sender = StepSender(timeout)
        threading.Thread(target=self._watch, name="tokenmill-tp-watcher", daemon=True).start()
        log.info("tensor parallelism: %d ranks on %s (%s), %d KV blocks per rank", self.world_size,
                 self.platform.name, self.launcher.name, self.state.pool.num_blocks)

    def _while_watching(self, fn: Callable[[], T]) -> T:
        """Run rank 0's start-up in a thread while watching the workers, so a worker that dies never hangs it."""
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["value"] = fn()
            except BaseException as exc:  # handed to the engine's thread below
                result["error"] = exc

        thread = threading.Thread(target=target, name="tokenmill-tp-rank0-start", daemon=True)
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while thread.is_alive():
            thread.join(_WATCH_S)
            failures = self.launcher.failures()
            if thread.is_alive() and (failures or time.monotonic() > deadline):
                why = _describe(failures) if failures else f"start-up took over {STARTUP_TIMEOUT_S:.0f} s"
                self._stop_workers()
                thread.join(_DIAGNOSE_S)  # rank 0 usually fails at once too, with its peer gone
                if not thread.is_alive():
                    self.shutdown()  # then its process groups can go (a thread still in them keeps them)
                raise EngineDeadError(f"tensor-parallel start-up failed: {why}")
        error = result.get("error")
        if error is not None:
            # a collective that failed because a worker fell: name it; rank 0's own error: raise it
            failures = self._await_failures() if isinstance(error, RuntimeError) else {}
            if failures:
                self._record(_describe(failures))
            self.shutdown()  # rank 0's start-up thread has ended: its process groups can go too
            if failures:
                raise EngineDeadError(self.failure.replace("tensor-parallel ", "tensor-parallel start-up: ", 1))
            raise error
        return result["value"]

    # ------------------------------------------------------------------ what the engine uses

    @property
    def bundle(self) -> Any:
        return self.state.bundle

    @property
    def pool(self) -> Any:
        return self.state.pool

    @property
    def allocator(self) -> BroadcastingAllocator:
        return BroadcastingAllocator(self.state.allocator, self)

    def runner_class(self, *args: Any, **kwargs: Any) -> DriverRunner:
        """Build the engine's runner (ModelRunner's arguments): rank 0's, broadcasting each step."""
        return DriverRunner(self, *args, **kwargs)

    def guarded(self, fn: Callable[[], T]) -> T:
        """Run rank 0's part of a collective step; a failure becomes EngineDeadError naming the rank."""
        self.check_alive()
        try:
            return fn()
        except RuntimeError as exc:  # gloo/NCCL: a peer closed its connection, or the timeout passed
            self._fail(exc)
            raise EngineDeadError(self.failure) from None

    def check_alive(self) -> None:
        """Raise EngineDeadError if a rank has fallen (the watcher notices while the engine idles)."""
        if self.failure is not None:
            self.shutdown()  # from the engine's thread, the one that may leave the process groups
            raise EngineDeadError(self.failure)

    def worker_pids(self) -> dict[int, int]:
        """rank -> process id of each worker (for operators and tests)."""
        return self.launcher.pids()

    # ------------------------------------------------------------------ faults and shutdown

    def _await_failures(self) -> dict[int, str]:
        """The launcher's failures, waiting up to _DIAGNOSE_S for it to see the one that broke a collective."""
        deadline = time.monotonic() + _DIAGNOSE_S
        failures = self.launcher.failures()
        while not failures and time.monotonic() < deadline:
            time.sleep(0.1)
            failures = self.launcher.failures()
        return failures

    def _fail(self, exc: BaseException) -> None:
        failures = self._await_failures()
        if failures:
            why = _describe(failures)
        else:
            silent = ", ".join(str(r) for r in range(1, self.world_size))
            why = f"rank(s) {silent} did not answer a collective in time ({type(exc).__name__}: {_first_line(exc)})"
        self._record(why)
        self.shutdown()

    def _record(self, why: str) -> None:
        """Note the first failure and stop the workers (any thread; the process groups stay for shutdown)."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure = f"tensor-parallel {why}; the engine stopped its workers and cannot continue: restart it"
        log.error("%s", self.failure)
        self._stop_workers()

    def _watch(self) -> None:
        while not self._workers_stopped.wait(_WATCH_S):
            failures = self.launcher.failures()
            if failures and not self._shut:  # a worker exiting on our own stop is no failure
                self._record(_describe(failures))
                return

    def shutdown(self) -> None:
        """Stop every worker (asking first when they are healthy) and leave the process groups; idempotent.

        Call it from the engine's thread. Bounded: workers that do not exit within a few seconds
        are killed.
        """
        with self._lock:
            if self._shut:
                return
            self._shut = True
        if self.failure is None and self.sender is not None:
            try:
                self.sender.send_stop()
            except RuntimeError:
                pass  # a worker went while we stopped: killed below
        self._stop_workers()
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # a group left broken by a dead peer: nothing more to release
                log.debug("destroy_process_group failed", exc_info=True)
        self.launcher.close()

    def _stop_workers(self) -> None:
        """Healthy workers get _STOP_S to leave after the stop message; after a failure they are killed now."""
        self._workers_stopped.set()
        self.launcher.stop(0.0 if self.failure is not None else _STOP_S)


def _describe(failures: dict[int, str]) -> str:
    return "; ".join(f"rank {rank} {what}" for rank, what in sorted(failures.items()))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _free_port(host: str) -> int:
    """A TCP port free on `host` now, for rank 0's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
