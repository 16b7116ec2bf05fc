"""PlainArrayReader: the gguf package's GGUFReader, with a header parse fast enough for start-up.

Why not the library's parse as it is: the default model's header holds ~98k strings (the
vocabulary and the merges), and the library makes two numpy views per string. Over np.memmap each
slice also runs Python hooks; that took ~1.2 s. This reader reads the same bytes through a plain
memoryview, and a string array costs one pass that records where each string starts (~20 ms);
its strings are sliced out only when something reads them (the tokenizer comes from its own cache,
so on most starts nothing does). contents() gives the library's values (tests compare).
"""

from __future__ import annotations

import struct
import sys
from typing import Any, Iterator, Sequence

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.gguf_reader import ReaderField

_U64 = struct.Struct("<Q")
_ARRAY_HEAD = struct.Struct("<IQ")  # item type, count


class _StringParts(Sequence):
    """A field's parts: its leading parts, then a (length, text) pair of memoryviews per string, made on access."""

    def __init__(self, lead: list[Any], data: memoryview, starts: list[int]) -> None:
        self._lead, self._data, self._starts = lead, data, starts

    def __len__(self) -> int:
        return len(self._lead) + 2 * len(self._starts)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if index < len(self._lead):
            return self._lead[index]
        pair, text = divmod(index - len(self._lead), 2)
        start = self._starts[pair]
        if not text:
            return self._data[start : start + 8]
        size = _U64.unpack_from(self._data, start)[0]
        return self._data[start + 8 : start + 8 + size]

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))


class PlainArrayReader(GGUFReader):
    """GGUFReader over a plain-ndarray view of its memory map, string arrays parsed lazily, and a
    numeric array one part instead of one per element. A file of the other byte order takes the
    library's own parse."""

    @property
    def data(self) -> np.ndarray:
        return self._plain_data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._plain_data = value.view(np.ndarray) if isinstance(value, np.memmap) else value
        self._bytes = memoryview(self._plain_data).cast("B")

    def _get_str(self, offset: int) -> tuple[Any, Any]:
        if self.byte_order != "I":
            return super()._get_str(offset)
        size = self._bytes[offset : offset + 8]
        return size, self._bytes[offset + 8 : offset + 8 + int.from_bytes(size, sys.byteorder)]

    def _build_fields(self, offs: int, count: int) -> int:
        if self.byte_order != "I" or sys.byteorder != "little":
            return super()._build_fields(offs, count)
        for _ in range(count):
            start = offs
            key_size, key = self._get_str(offs)
            offs += 8 + key.nbytes
            raw_type = self._get(offs, np.uint32)
            offs += 4
            lead = [key_size, key, raw_type]
            if raw_type[0] == GGUFValueType.ARRAY and self._item_type(offs) == GGUFValueType.STRING:
                size, parts, data, types = self._string_array(offs, lead)
            else:
                size, value_parts, idxs, types = self._get_field_parts(offs, raw_type[0])
                parts, data = lead + value_parts, [i + len(lead) for i in idxs]
            self._push_field(ReaderField(start, str(bytes(key), encoding="utf-8"), parts, data, types), skip_sum=True)
            offs += size
        return offs

    def _item_type(self, offs: int) -> int:
        return _ARRAY_HEAD.unpack_from(self._bytes, offs)[0]

    def _string_array(self, offs: int, lead: list[Any]) -> tuple[int, _StringParts, range, list[GGUFValueType]]:
        """An array of strings at `offs`: its size in bytes, parts, data indices and types."""
        count = _ARRAY_HEAD.unpack_from(self._bytes, offs)[1]
        head = self._bytes[offs : offs + 12]
        starts, at, unpack = [0] * count, offs + 12, _U64.unpack_from
        for i in range(count):
            starts[i] = at
            at += 8 + unpack(self._bytes, at)[0]
        parts = _StringParts(lead + [head], self._bytes, starts)
        first = len(lead) + 2  # the first string's text part
        types = [GGUFValueType.ARRAY] + ([GGUFValueType.STRING] if count else [])
        return at - offs, parts, range(first, first + 2 * count, 2), types

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
        if self.byte_order != "I" or raw_type != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        head = self._bytes[orig_offs : orig_offs + 12]  # item type (uint32), count (uint64)
        item_type = GGUFValueType(int.from_bytes(head[:4], sys.byteorder))
        count = int.from_bytes(head[4:], sys.byteorder)
        nptype = self.gguf_scalar_to_np.get(item_type)
        if nptype is None:  # arrays of arrays (and strings, outside _build_fields): the library's path
            return super()._get_field_parts(orig_offs, raw_type)
        types = [GGUFValueType.ARRAY] + ([item_type] if count else [])
        values = self._get(orig_offs + 12, nptype, count)
        return 12 + int(values.nbytes), [head, values], [1], types
