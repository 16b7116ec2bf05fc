"""The child process of TemplateSandbox: renders one chat template per line of stdin, in a memory cap.

Protocol: each request is one JSON line {"template", "messages", "kwargs"}; each answer one JSON
line {"text"} or {"error"}. Rendering uses transformers' own renderer (a Jinja sandbox with the
helpers chat templates expect), so a template renders here exactly as the model's own does.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from typing import Any


def _limit_memory(max_bytes: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = max_bytes if hard == resource.RLIM_INFINITY else min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _render(job: dict[str, Any], max_chars: int) -> dict[str, Any]:
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered = render_jinja_template(conversations=[job["messages"]], chat_template=job["template"],
                                         **job["kwargs"])
    except MemoryError:
        return {"error": "the chat template ran out of memory while rendering"}
    except Exception as exc:  # jinja raises for templates and conversations it cannot render
        return {"error": f"{type(exc).__name__}: {exc}"}
    text = rendered[0][0] if isinstance(rendered, tuple) else rendered[0]
    if len(text) > max_chars:
        return {"error": f"the chat template rendered {len(text)} characters, more than the {max_chars} that "
                         f"could fit the model's context"}
    return {"text": text}


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is the server's to handle
    max_bytes, max_chars = int(sys.argv[1]), int(sys.argv[2])
    from transformers.utils.chat_template_utils import render_jinja_template  # noqa: F401  (import before the cap)

    _limit_memory(max_bytes)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            answer = _render(json.loads(line), max_chars)
        except MemoryError:
            answer = {"error": "the chat template ran out of memory while rendering"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
