"""The body of the communicator conformance test: runs in each of 2 spawned processes."""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist

from tokenmill.plugin_manager import load_plugins

WORLD_SIZE = 2


def run_rank(rank: int, port: int, device_name: str) -> None:
    """Join a 2-process group on the platform's backend and check every collective; raises on a mismatch."""
    manager = load_plugins()
    platform = manager.select(device_name)
    device = manager.kv_allocator(platform, rank).device
    options = {} if device.type == "cpu" else {"device_id": device}
    dist.init_process_group(
        platform.dist_backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
        world_size=WORLD_SIZE, timeout=timedelta(seconds=60), **options,
    )
    try:
        comm = manager.communicator(platform, None)
        assert (comm.rank, comm.world_size) == (rank, WORLD_SIZE), (comm.rank, comm.world_size)
        for dtype in _dtypes(platform):
            _check_all(comm, rank, device, dtype)
    finally:
        dist.destroy_process_group()


def _dtypes(platform) -> list[torch.dtype]:
    names = [n for n in ("float32", "bfloat16") if n in platform.supported_dtypes]
    return [getattr(torch, n) for n in names]


def _rank_tensor(rank: int, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A tensor whose values say which rank made it: arange + 100 * rank (exact in bfloat16 up to 256)."""
    return (torch.arange(torch.Size(shape).numel()).view(shape) + 100 * rank).to(device=device, dtype=dtype)


def _check_all(comm, rank: int, device: torch.device, dtype: torch.dtype) -> None:
    every = [_rank_tensor(r, (4, 6), torch.device("cpu"), torch.float32) for r in range(WORLD_SIZE)]
    total = sum(every)  # [4, 6]

    reduced = comm.all_reduce(_rank_tensor(rank, (4, 6), device, dtype))
    _same(reduced, total, "all_reduce")
    for dim in (0, 1):
        gathered = comm.all_gather(_rank_tensor(rank, (4, 6), device, dtype), dim=dim)
        _same(gathered, torch.cat(every, dim=dim), f"all_gather(dim={dim})")
        scattered = comm.reduce_scatter(_rank_tensor(rank, (4, 6), device, dtype), dim=dim)
        _same(scattered, total.chunk(WORLD_SIZE, dim=dim)[rank], f"reduce_scatter(dim={dim})")
    got = comm.broadcast(_rank_tensor(rank, (3, 5), device, dtype), src=1)
    _same(got, _rank_tensor(1, (3, 5), torch.device("cpu"), torch.float32), "broadcast(src=1)")
    _check_send_recv(comm, rank, device, dtype)


def _check_send_recv(comm, rank: int, device: torch.device, dtype: torch.dtype) -> None:
    for sender in range(WORLD_SIZE):
        receiver = 1 - sender
        if rank == sender:
            comm.send(_rank_tensor(sender, (2, 7), device, dtype), dst=receiver)
        else:
            got = comm.recv(torch.zeros((2, 7), device=device, dtype=dtype), src=sender)
            _same(got, _rank_tensor(sender, (2, 7), torch.device("cpu"), torch.float32), f"send/recv {sender}->{receiver}")


def _same(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    assert torch.equal(got.detach().float().cpu(), want), f"{what} ({got.dtype}): got {got}, expected {want}"
