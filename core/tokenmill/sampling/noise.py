"""Random draws for sampling: per-request generators and the exponential noise of the Gumbel race."""

from __future__ import annotations

import torch

_SEED_MASK = 0xFFFF_FFFF_FFFF_FFFF  # torch seeds are 64-bit; any Python int maps into that range


def new_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A generator on `device` seeded with `seed`, or None (use the device's global RNG) when unseeded.

    The engine makes one per seeded request (or per completion for n > 1, with a distinct seed each)
    and keeps it for the request's lifetime, so its stream of draws depends on nothing else.
    """
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed & _SEED_MASK)
    return generator


def exponential_noise(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """Exp(1) noise shaped like probs [R, V]; row i comes from generators[i] when it is not None.

    Sampling is argmax(probs / noise), which picks token j with probability probs[j] (the
    exponential race, equivalent to Gumbel-max). A seeded row draws exactly V values from its own
    generator each step, so its sample never depends on the other rows of the batch. Unseeded rows
    share one draw from the global RNG, without a Python loop.
    """
    noise = torch.empty_like(probs)  # [R, V]
    seeded = [i for i, g in enumerate(generators) if g is not None]
    if len(seeded) < len(generators):
        noise.exponential_()
    for i in seeded:
        noise[i].exponential_(generator=generators[i])
    # exponential_ can return exactly 0 (u = 0); a zero would turn a masked p = 0 into 0/0.
    return noise.clamp_min_(torch.finfo(noise.dtype).tiny)
