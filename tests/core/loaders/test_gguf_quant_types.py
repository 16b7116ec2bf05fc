"""A tiny Llama GGUF holding every supported tensor type, read by us and by transformers' GGUF loader.

F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 are quantized from real weights with gguf's own quantizer;
gguf has no K-quant quantizer, so Q4_K/Q5_K/Q6_K tensors are random blocks (any bytes are a valid
block once the fp16 scales are made finite). q/k rows are written in llama.cpp's permuted order, as its converter does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, quants
from transformers import AutoModelForCausalLM, LlamaConfig

from tokenmill.errors import ModelLoadError
from tokenmill.loaders import open_checkpoint
from tokenmill.models import arch_config

CONFIG = LlamaConfig(
    vocab_size=260, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
)
# llama.cpp name (less ".weight") -> storage type; K-quants need rows of 256, which every matrix has.
TYPES = {
    "blk.0.attn_q": Q.Q4_K, "blk.0.attn_k": Q.Q6_K, "blk.0.attn_v": Q.Q8_0, "blk.0.attn_output": Q.Q4_0,
    "blk.0.ffn_gate": Q.Q4_1, "blk.0.ffn_up": Q.BF16, "blk.0.ffn_down": Q.Q6_K,
    "blk.1.attn_q": Q.Q5_K, "blk.1.attn_k": Q.Q5_0, "blk.1.attn_v": Q.Q5_1, "blk.1.attn_output": Q.F16,
    "blk.1.ffn_gate": Q.Q4_K, "blk.1.ffn_up": Q.Q8_0,  # blk.1.ffn_down and the norms stay F32
    "token_embd": Q.F16, "output": Q.Q8_0,
}
KQUANT_BLOCKS = {Q.Q4_K: (144, (0, 2)), Q.Q5_K: (176, (0, 2)), Q.Q6_K: (210, (208,))}  # bytes, fp16 scale offsets
_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def _gguf_name(hf_name: str) -> str:
    if hf_name in _NAMES:
        return _NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, leaf = rest.rsplit(".", 1)
    return f"blk.{layer}.{_LAYER[module]}.{leaf}"


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter: each head's NeoX halves become interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _random_kquant(rows: int, cols: int, qtype: Q, gen: np.random.Generator) -> np.ndarray:
    block_bytes, scale_offsets = KQUANT_BLOCKS[qtype]
    blocks = gen.integers(0, 256, size=(rows, cols // 256, block_bytes), dtype=np.uint8)
    scale = np.array([0.01], dtype=np.float16).view(np.uint8)
    for offset in scale_offsets:  # d (and dmin) as finite fp16
        blocks[..., offset : offset + 2] = scale
    return blocks.reshape(rows, -1)


def _encode(w: np.ndarray, qtype: Q | None, gen: np.random.Generator) -> tuple[np.ndarray, Q]:
    if qtype is None:
        return w.astype(np.float32), Q.F32
    if qtype == Q.F16:
        return w.astype(np.float16), Q.F16
    if qtype in KQUANT_BLOCKS:
        return _random_kquant(*w.shape, qtype, gen), qtype
    return quants.quantize(w.astype(np.float32), qtype), qtype


def _write_gguf(path, metadata: dict, tensors: dict) -> None:
    """A llama GGUF with `metadata` (writer method suffix -> value) and name -> (data, type) tensors."""
    writer = GGUFWriter(str(path), "llama")
    for key, value in metadata.items():
        getattr(writer, f"add_{key}")(value)
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


_ONE_LAYER = {"block_count": 1, "embedding_length": 256, "head_count": 4, "context_length": 8}


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIG, dtype=torch.float32)
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    gen = np.random.default_rng(0)
    tensors = {}
    for hf_name, tensor in model.state_dict().items():
        name, w = _gguf_name(hf_name), tensor.numpy()
        if ".attn_q." in name or ".attn_k." in name:
            w = _permute(w, 4 if ".attn_q." in name else 2)
        tensors[name] = _encode(w, TYPES.get(name.rsplit(".", 1)[0]), gen)
    metadata = {
        "block_count": 2, "context_length": 128, "embedding_length": 256, "feed_forward_length": 512,
        "head_count": 4, "head_count_kv": 2, "layer_norm_rms_eps": 1e-5, "rope_freq_base": 10000.0,
        "vocab_size": 260,
    }
    _write_gguf(path, metadata, tensors)
    return path


def test_every_type_is_present(gguf_path):
    checkpoint = open_checkpoint(str(gguf_path))
    stored = {t.tensor_type for t in checkpoint.reader.tensors}
    assert stored == {Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q4_K, Q.Q6_K, Q.Q5_0, Q.Q5_1, Q.Q5_K}


def test_tensors_equal_transformers_gguf_loader(gguf_path):
    checkpoint = open_checkpoint(str(gguf_path))
    reference = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    ).state_dict()
    assert set(checkpoint.names()) == set(reference)
    for name in checkpoint.names():
        ours = checkpoint.tensor(name)
        assert ours.shape == reference[name].shape == checkpoint.shape(name), name
        assert torch.equal(ours, reference[name]), name


def test_unpermuted_f16_rows_round_trip(tmp_path):
    """Independent of transformers: permute, store as F16, load; we must get the F16 weights back."""
    w = np.random.default_rng(1).standard_normal((4 * 64, 256)).astype(np.float32)  # 4 heads of 64 rows
    _write_gguf(tmp_path / "one.gguf", _ONE_LAYER, {"blk.0.attn_q.weight": (_permute(w, 4).astype(np.float16), Q.F16)})
    loaded = open_checkpoint(str(tmp_path / "one.gguf")).tensor("model.layers.0.self_attn.q_proj.weight")
    assert torch.equal(loaded, torch.from_numpy(w.astype(np.float16).astype(np.float32)))


def test_metadata_becomes_the_config(gguf_path):
    arch, _ = arch_config(open_checkpoint(str(gguf_path)).config)
    assert (arch.architecture, arch.hidden_size, arch.num_layers) == ("LlamaForCausalLM", 256, 2)
    assert (arch.num_heads, arch.num_kv_heads, arch.head_size, arch.intermediate_size) == (4, 2, 64, 512)
    assert (arch.vocab_size, arch.max_position_embeddings, arch.tie_word_embeddings) == (260, 128, False)
    assert arch.rms_norm_eps == pytest.approx(1e-5) and arch.rope_theta == 10000.0


def test_unsupported_type_names_tensor_and_type(tmp_path):
    blocks = np.zeros((256, 66), dtype=np.uint8)  # IQ2_XXS: 66 bytes per 256 values
    _write_gguf(tmp_path / "iq2.gguf", _ONE_LAYER, {"blk.0.attn_v.weight": (blocks, Q.IQ2_XXS)})
    with pytest.raises(ModelLoadError) as exc_info:
        open_checkpoint(str(tmp_path / "iq2.gguf")).tensor("model.layers.0.self_attn.v_proj.weight")
    message = str(exc_info.value)
    assert "'blk.0.attn_v.weight'" in message and "IQ2_XXS" in message and "Q2_K" in message
