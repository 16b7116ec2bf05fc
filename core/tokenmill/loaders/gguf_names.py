"""llama.cpp tensor names -> transformers names for the Llama-family decoders."""

from __future__ import annotations

_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_PER_LAYER = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def gguf_to_hf_name(name: str) -> str | None:
    """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight'; None for tensors with no
    transformers counterpart (e.g. rope_freqs.weight, which the config absorbs)."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    parts = name.split(".")
    if len(parts) != 4 or parts[0] != "blk" or parts[2] not in _PER_LAYER:
        return None
    return f"model.layers.{parts[1]}.{_PER_LAYER[parts[2]]}.{parts[3]}"


def needs_unpermute(hf_name: str) -> bool:
    """True for the q/k projections, whose rows llama.cpp's converter interleaves for llama."""
    return ".self_attn.q_proj." in hf_name or ".self_attn.k_proj." in hf_name
