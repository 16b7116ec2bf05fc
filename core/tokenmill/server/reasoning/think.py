"""ThinkSplitter: a choice's text as (reasoning, content) around <think> ... </think>, streamed or not."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.server.tools.parser import hold_back

START, END = "<think>", "</think>"


@dataclass(frozen=True, slots=True)
class ThinkSplitter:
    """Splits one choice's output. `opened`: the prompt already opened the thinking block (the chat
    template ended with <think>), so the output starts inside it.

    qwen3: the output reasons only when the block is open (by the prompt, or by the output's own
    leading <think>). deepseek_r1: the output always starts inside the block (R1's template opens it,
    and R1 models often leave out <think>). Reasoning runs to </think>; an output that ends before
    it is all reasoning. `split` is called on the whole text so far and both parts only ever grow,
    so a stream sends their new parts and its last call equals the non-streamed answer.
    """

    always_open: bool
    opened: bool = False

    def split(self, text: str, final: bool) -> tuple[str | None, str]:
        """(reasoning or None when the output does not reason, content), each as far as it is certain."""
        stripped = text.lstrip()
        if stripped.startswith(START):
            body = stripped[len(START):]
        elif not final and START.startswith(stripped):
            return "", ""  # only whitespace or the start of "<think>" so far: not known yet
        elif self.always_open or self.opened:
            body = text
        else:
            return None, text
        end = body.find(END)
        if end < 0:
            return (body if final else hold_back(body, (END,))).strip(), ""
        return body[:end].strip(), body[end + len(END):].lstrip()


REASONING_PARSERS = {"qwen3": False, "deepseek_r1": True}  # name -> always starts inside the block


def reasoning_splitter(name: str, prompt_tail: str) -> ThinkSplitter:
    """The splitter of --reasoning-parser `name` for a prompt whose rendered text ends with `prompt_tail`."""
    if name not in REASONING_PARSERS:
        raise ValueError(f"unknown --reasoning-parser {name!r}; choose one of {', '.join(REASONING_PARSERS)}")
    opened = prompt_tail.rfind(START) > prompt_tail.rfind(END)
    return ThinkSplitter(always_open=REASONING_PARSERS[name], opened=opened)
