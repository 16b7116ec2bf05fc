"""Conformance: the communicator's collectives agree across 2 processes."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from tokenmill.testing.collective_checks import WORLD_SIZE, run_rank


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_collectives_across_two_processes(tokenmill_platform):
    """all_reduce, all_gather and reduce_scatter on dims 0 and 1, broadcast, send/recv, per dtype.

    One process per device: an accelerator platform needs WORLD_SIZE devices here (the host CPU
    serves any number of processes).
    """
    if tokenmill_platform.device_type != "cpu":
        count = torch.accelerator.device_count()
        if count < WORLD_SIZE:
            pytest.skip(f"{tokenmill_platform.name} collectives need {WORLD_SIZE} devices, one per process; "
                        f"this machine has {count}")
    mp.spawn(run_rank, args=(_free_port(), tokenmill_platform.name), nprocs=WORLD_SIZE, join=True)
