"""ServerLimits: the bounds one request may not pass (fan-out, sizes, stop strings, templates, queueing)."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(slots=True)
class ServerLimits:
    """What the server refuses before it spends work on a request; each has a `serve` flag.

    Defaults follow OpenAI where it states one (n <= 128, 4 stop strings); the others are sized so
    that one request cannot hold the event loop, the step loop or memory for long.
    """

    max_n: int = 128  # --max-n: completions per prompt
    max_stop_strings: int = 4  # --max-stop-strings
    max_stop_length: int = 1024  # --max-stop-length, in characters
    max_body_bytes: int = 8 * MiB  # --max-request-body-bytes: larger bodies get 413
    max_queued_seqs: int = 1024  # --max-queued-seqs: sequences admitted but not started, else 503
    max_pending_prompt_tokens: int = 1 << 20  # --max-pending-prompt-tokens: their prompt tokens, else 503
    max_queue_wait_s: float = 300.0  # --max-queue-wait: a request not started by then gets 503
    retry_after_s: int = 1  # the Retry-After a 503 from the limits above carries
    chat_template_timeout_s: float = 5.0  # --chat-template-timeout: rendering a request's own template

    def __post_init__(self) -> None:
        for name in ("max_n", "max_stop_strings", "max_stop_length", "max_body_bytes", "max_queued_seqs",
                     "max_pending_prompt_tokens", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_queue_wait_s", "chat_template_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
