"""TemplateSandbox on its own: the model's template renders as transformers renders it; runaway,
memory-hungry and escaping templates fail in the child, and the sandbox keeps serving after."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tokenmill.loaders.bundle import open_checkpoint
from tokenmill.server.template_sandbox import TemplateFailed, TemplateSandbox, TemplateTimeout
from tokenmill.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def sandbox():
    box = TemplateSandbox(timeout_s=2.0, max_chars=100_000, num_workers=1)
    assert box.wait_ready(120)
    yield box
    box.close()


def test_renders_the_default_models_template_as_transformers_does(sandbox):
    tokenizer = load_tokenizer(Path(open_checkpoint(None).source))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 世界"}]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    kwargs = {**tokenizer.special_tokens_map, "add_generation_prompt": True}
    assert sandbox.render(tokenizer.chat_template, messages, kwargs) == expected


def test_a_runaway_template_is_killed_at_the_bound_and_the_next_render_works(sandbox):
    start = time.monotonic()
    with pytest.raises(TemplateTimeout):
        sandbox.render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", [], {})
    assert 1.9 < time.monotonic() - start < 10
    assert sandbox.render("{{ messages[0].content }}!", [{"role": "user", "content": "again"}], {}) == "again!"


@pytest.mark.parametrize("template,needle", [
    ("{{ 'x' * 10000000000 }}", "memory"),
    ("{{ ''.__class__.__mro__ }}", "unsafe"),
    ("{{ raise_exception('no tools here') }}", "no tools here"),
    ("{% for i in range(99999) %}{{ 'abcdefghij' }}{% endfor %}", "more than the 100000"),
])
def test_failing_templates_fail_in_the_child(sandbox, template, needle):
    with pytest.raises(TemplateFailed, match=needle):
        sandbox.render(template, [], {})
    assert sandbox.render("ok", [], {}) == "ok"
