"""Maps each model parameter to the checkpoint tensors (transformers names) it is built from."""

from __future__ import annotations

from torch import nn

from tokenmill.models.arch_config import ArchConfig

# A merged projection's parameter is its parts' tensors concatenated along dim 0, in this order.
_MERGED_PARTS = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
}

Layout = dict[str, list[tuple[str, tuple[int, ...]]]]  # param name -> [(checkpoint name, shape)]


def checkpoint_layout(model: nn.Module, arch: ArchConfig) -> Layout:
    """For every parameter of `model` (tied ones once), the checkpoint tensors and shapes it needs."""
    part_rows = {
        "qkv_proj": (arch.q_size, arch.kv_size, arch.kv_size),
    }
    layout: Layout = {}
    fused = getattr(model, "fused_in_checkpoint", ())  # merged projections the checkpoint stores merged (Phi-3)
    for name, param in model.named_parameters():
        module_path, _, leaf = name.rpartition(".")
        parent, _, module_name = module_path.rpartition(".")
        own_parts = getattr(model.get_submodule(module_path), "checkpoint_parts", None)
        if own_parts is not None:  # a module that names its own checkpoint tensors (models/moe.py)
            layout[name] = own_parts(leaf)
            continue
        part_rows["gate_up_proj"] = (param.shape[0] // 2,) * 2  # gate rows, then as many up rows
        if module_name not in _MERGED_PARTS or module_name in fused:
            layout[name] = [(name, tuple(param.shape))]
            continue
        rows = part_rows[module_name]
        layout[name] = [
            (f"{parent}.{part}.{leaf}", (n, *param.shape[1:])) for part, n in zip(_MERGED_PARTS[module_name], rows)
        ]
    return layout
