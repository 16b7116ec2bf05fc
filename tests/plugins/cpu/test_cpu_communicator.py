"""GlooCommunicator details the 2-process conformance test cannot force: the reduce_scatter fallback."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from tokenmill_cpu.communicator import GlooCommunicator


@pytest.fixture()
def world_of_one():
    """A one-process gloo group in this process, torn down afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_emulated_reduce_scatter_matches_native(world_of_one):
    comm = GlooCommunicator()
    x = torch.arange(24, dtype=torch.float32).view(4, 6)
    native = comm.reduce_scatter(x.clone(), dim=1)
    comm._native_reduce_scatter = False  # what happens after gloo refuses the native collective
    emulated = comm.reduce_scatter(x.clone(), dim=1)
    assert torch.equal(native, x) and torch.equal(emulated, x)


def test_reduce_scatter_refuses_an_indivisible_dim(world_of_one):
    comm = GlooCommunicator()
    comm.world_size = 2  # as on a 2-rank group; the check runs before any communication
    with pytest.raises(ValueError, match="divide by the world size 2"):
        comm.reduce_scatter(torch.zeros(3, 4), dim=0)


def test_rank_and_world_size(world_of_one):
    comm = GlooCommunicator(None)
    assert (comm.rank, comm.world_size) == (0, 1)
    assert torch.equal(comm.all_gather(torch.ones(2, 3), dim=1), torch.ones(2, 3))
