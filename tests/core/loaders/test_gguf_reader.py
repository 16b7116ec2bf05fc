"""tokenmill's faster GGUF metadata parse reads the same fields and tensors as the gguf package's reader."""

from __future__ import annotations

import numpy as np
from gguf import GGUFReader, GGUFWriter

from tokenmill.loaders.default_model import default_model_path
from tokenmill.loaders.gguf_reader import PlainArrayReader


def assert_same_reading(path) -> None:
    ours, theirs = PlainArrayReader(path), GGUFReader(path)
    assert ours.fields.keys() == theirs.fields.keys()
    for key, field in theirs.fields.items():
        assert ours.fields[key].contents() == field.contents(), key
        assert ours.fields[key].types == field.types, key
    assert [(t.name, t.tensor_type, t.data_offset) for t in ours.tensors] == \
        [(t.name, t.tensor_type, t.data_offset) for t in theirs.tensors]


def test_the_default_model_reads_the_same():
    assert_same_reading(default_model_path())  # a 49k-token vocabulary, merges, scalars


def test_every_array_kind_reads_the_same(tmp_path):
    path = tmp_path / "arrays.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_array("t.strings", ["a", "", "ünïcode", "x" * 300])
    writer.add_array("t.ints", [3, -1, 7])
    writer.add_array("t.floats", [0.5, -2.25])
    writer.add_array("t.bools", [True, False])
    writer.add_array("t.empty", [])
    writer.add_string("t.one", "single")
    writer.add_tensor("w", np.arange(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert_same_reading(path)
