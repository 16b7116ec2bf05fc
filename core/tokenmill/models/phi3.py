"""Phi-3 (and Phi-3.5/Phi-4-mini text): the Llama graph over checkpoints that store qkv and gate_up fused.

Its longrope ("su") scaling is computed by transformers' rope functions (models/rotary.py), and
its sliding window, where the config sets one, applies to every layer.
"""

from __future__ import annotations

from tokenmill.models.llama import LlamaForCausalLM


class Phi3ForCausalLM(LlamaForCausalLM):
    """Phi-3: same blocks as Llama; `qkv_proj` and `gate_up_proj` load as stored (gate rows, then up)."""

    fused_in_checkpoint = ("qkv_proj", "gate_up_proj")
