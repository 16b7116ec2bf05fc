"""Random draws for sampling: per-request generators and the noise of the exponential race."""

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


def log_uniform_noise(probs: torch.Tensor, generators: list[torch.Generator | None],
                      counts: list[int] | None = None) -> torch.Tensor:
    """log(u), u ~ U(tiny, 1), shaped like probs [R, C]: row i from generators[i] when not None.

    -log(u) is Exp(1), so argmin(probs / log(u)) = argmax(probs / Exp(1)) picks token j with
    probability probs[j] (the exponential race, equivalent to Gumbel-max). Drawing uniforms and
    taking a log is about twice as fast on CPU as exponential_, and u >= tiny keeps log(u) finite.
    A seeded row draws exactly counts[i] values (default C) from its own generator each step, into
    its first counts[i] columns (the rest must be masked, probs 0), so its sample never depends
    on the other rows of the batch; unseeded rows share one draw from the global RNG.
    """
    tiny = torch.finfo(probs.dtype).tiny
    noise = torch.empty_like(probs)  # [R, C]
    seeded = [i for i, g in enumerate(generators) if g is not None]
    if len(seeded) < len(generators):
        noise.uniform_(tiny, 1.0)
    elif counts is not None:
        noise.fill_(0.5)  # columns past a row's count: any finite negative log will do
    for i in seeded:
        row = noise[i] if counts is None else noise[i, : counts[i]]
        row.uniform_(tiny, 1.0, generator=generators[i])
    return noise.log_()
