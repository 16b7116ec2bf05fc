"""RayLauncher: the tensor-parallel workers as Ray actors in a placement group, on one node or many.

It joins the Ray cluster `ray.init()` finds ($RAY_ADDRESS, else the latest `ray start` on this
machine), or starts a local one (and stops it again on shutdown). One placement-group bundle per
rank holds a device; bundle 0 is pinned to this node for rank 0, which is the engine's own
process, so the device count is right. Ray schedules only; rank 0's rendezvous, the collectives
and the step broadcast go through torch.distributed exactly as with the mp launcher.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tokenmill.errors import EngineDeadError, TokenmillError
from tokenmill.parallel.rank_setup import RankSpec

log = logging.getLogger(__name__)

_PLACEMENT_TIMEOUT_S = 60.0
# torch device type -> the Ray resource one rank reserves
_RESOURCES = {"cpu": "CPU", "cuda": "GPU", "hpu": "HPU", "xla": "TPU"}


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TokenmillError("--distributed-executor-backend ray needs Ray: pip install 'tokenmill[ray]'") from None
    return ray


class RankActor:
    """One worker rank inside a Ray actor (wrapped by ray.remote at launch)."""

    def where(self) -> tuple[str, int]:
        """(node IP, pid) of this actor."""
        import ray

        return ray.util.get_node_ip_address(), os.getpid()

    def run(self, spec: RankSpec, ranks_on_host: int) -> int:
        """Start the rank and serve steps until the driver says stop; returns the steps run."""
        from tokenmill.parallel.worker_loop import run_worker, start_worker

        return run_worker(start_worker(spec, ranks_on_host), spec.args)


class RayLauncher:
    """Places ranks 1..N-1 as actors; rank 0's bundle reserves this node's device for the engine."""

    name = "ray"

    def __init__(self, world_size: int, device_type: str) -> None:
        ray = self._ray = _ray()
        self._owns = not ray.is_initialized()
        if self._owns:
            ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True)  # None: find or start one
        self._resource = _RESOURCES.get(device_type, "GPU")
        self._group = self._place(world_size)
        self._nodes = self._bundle_nodes()
        self._actors: dict[int, Any] = {}
        self._runs: dict[int, Any] = {}
        self._where: dict[int, tuple[str, int]] = {}
        self._stopped = False

    def _place(self, world_size: int) -> Any:
        from ray.util.placement_group import placement_group

        ray, here = self._ray, self._ray.util.get_node_ip_address()
        bundles = [{self._resource: 1.0} for _ in range(world_size)]
        bundles[0][f"node:{here}"] = 0.001  # rank 0 is this process: its device must be on this node
        group = placement_group(bundles, strategy="PACK")
        ready, _ = ray.wait([group.ready()], timeout=_PLACEMENT_TIMEOUT_S)
        if not ready:
            ray.util.remove_placement_group(group)
            raise TokenmillError(
                f"the Ray cluster cannot place {world_size} ranks of 1 {self._resource} each (rank 0 on this "
                f"node, {here}) within {_PLACEMENT_TIMEOUT_S:.0f} s; it has {ray.available_resources()}. "
                "Add nodes (ray start --address=...) or lower --tensor-parallel-size")
        return group

    def _bundle_nodes(self) -> list[str]:
        table = self._ray.util.placement_group_table(self._group)
        mapping = table["bundles_to_node_id"]
        return [mapping[i] for i in range(len(mapping))]

    def host(self) -> str:
        return self._ray.util.get_node_ip_address()

    def local_rank(self, rank: int) -> int:
        """Device index on its node: Ray hands each GPU actor its own device as index 0."""
        return 0

    def ranks_on_driver_host(self, world_size: int) -> int:
        return self._nodes.count(self._nodes[0])

    def launch(self, specs: list[RankSpec]) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        ray = self._ray
        gpus = 1 if self._resource == "GPU" else 0
        cpus = 1 if self._resource == "CPU" else 0
        extra = {} if self._resource in ("CPU", "GPU") else {"resources": {self._resource: 1}}
        actor_class = ray.remote(RankActor)
        for spec in specs:
            strategy = PlacementGroupSchedulingStrategy(self._group, placement_group_bundle_index=spec.rank)
            actor = actor_class.options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy=strategy,
                                        **extra).remote()
            self._actors[spec.rank] = actor
        for rank, actor in self._actors.items():  # before run: an actor serves one call at a time
            try:
                self._where[rank] = ray.get(actor.where.remote(), timeout=_PLACEMENT_TIMEOUT_S)
            except Exception as exc:
                self.stop(0)
                self.close()
                raise EngineDeadError(f"tensor-parallel rank {rank} (Ray actor) did not start: {exc}") from None
        for spec in specs:
            on_host = self._nodes.count(self._nodes[spec.rank])
            self._runs[spec.rank] = self._actors[spec.rank].run.remote(spec, on_host)

    def pids(self) -> dict[int, int]:
        return {rank: pid for rank, (_, pid) in self._where.items()}

    def failures(self) -> dict[int, str]:
        """rank -> what went wrong, for every actor whose run ended without being asked to."""
        if self._stopped or not self._runs:
            return {}
        ray = self._ray
        refs = list(self._runs.values())
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        out = {}
        for rank, ref in self._runs.items():
            if ref not in done:
                continue
            node, pid = self._where.get(rank, ("?", "?"))
            try:
                ray.get(ref, timeout=0)
                out[rank] = f"(Ray actor, pid {pid} on {node}) exited unasked"
            except Exception as exc:
                out[rank] = f"(Ray actor, pid {pid} on {node}) died: {_first_line(exc)}"
        return out

    def stop(self, timeout_s: float) -> None:
        """Give the actors `timeout_s` to finish their run (after a stop), then kill them and free the group."""
        if self._stopped:
            return
        self._stopped = True
        ray = self._ray
        if self._runs:
            ray.wait(list(self._runs.values()), num_returns=len(self._runs), timeout=timeout_s)
        for actor in self._actors.values():
            try:
                ray.kill(actor)
            except Exception:
                log.debug("ray.kill failed", exc_info=True)
        try:
            ray.util.remove_placement_group(self._group)
        except Exception:
            log.debug("remove_placement_group failed", exc_info=True)

    def close(self) -> None:
        """Leave the cluster: stop the local one tokenmill started; a cluster we joined keeps running."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]
