"""Request: one sequence's token ids, progress and status as the scheduler tracks it."""

from __future__ import annotations

import enum
import time


class RequestStatus(enum.IntEnum):
    """Where a request is in its life; every value above PREEMPTED is a finished state."""

    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2  # lost its blocks; waits to be recomputed from token 0
    FINISHED_STOPPED = 3  # eos, a stop token or a stop string
    FINISHED_LENGTH = 4  # max_tokens or max_model_len reached
    FINISHED_ABORTED = 5

    def is_finished(self) -> bool:
        return self > RequestStatus.PREEMPTED


class Request:
    """One sequence: its prompt, its generated tokens and how much of it the KV cache holds.

    `all_token_ids` is prompt + outputs in one list, kept in sync by `append_output_token`.
    `num_computed_tokens` counts the leading tokens whose KV is in the cache (or being written in
    the current step); the tokens after it are what the next step has to compute. After a
    preemption it drops to 0 and the outputs so far are recomputed as part of the "prompt".
    `num_pending_tokens` (0 or 1) counts a token sampled by a step still on the device (async
    scheduling): it is counted in `num_tokens` but not yet in the id lists, and
    `resolve_pending_token` appends it once its value is read back.
    The engine may set extra attributes (sampling parameters, detokenizer state) on a Request.
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        max_tokens: int,
        *,
        priority: int = 0,
        arrival_time: float | None = None,
    ) -> None:
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.all_token_ids = list(self.prompt_token_ids)
        self.num_prompt_tokens = len(self.prompt_token_ids)
        self.max_tokens = max_tokens
        self.priority = priority  # lower value is served earlier, as in vLLM
        self.arrival_time = time.time() if arrival_time is None else arrival_time
        self.status = RequestStatus.WAITING
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prefix-cache hit tokens at first admission
        self.num_preemptions = 0
        self.block_hashes: list[bytes] = []  # content hash of each full block, kept by the KV manager
        self.num_pending_tokens = 0  # sampled on the device, value not read back yet (async scheduling)

    @property
    def num_tokens(self) -> int:
        """Every token the request has, a pending one included (all_token_ids holds the known ones)."""
        return len(self.all_token_ids) + self.num_pending_tokens

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    def append_output_token(self, token_id: int) -> None:
        """Record one sampled token; its KV is computed by the next step that serves this request."""
        self.output_token_ids.append(token_id)
        self.all_token_ids.append(token_id)

    def add_pending_token(self) -> None:
        """A step now running samples this request's next token; its value comes later."""
        self.num_pending_tokens += 1

    def resolve_pending_token(self, token_id: int) -> None:
        """The pending token's value arrived: record it as an output."""
        if self.num_pending_tokens < 1:
            raise ValueError(f"request {self.request_id!r} has no pending token to resolve")
        self.num_pending_tokens -= 1
        self.append_output_token(token_id)

    def is_finished(self) -> bool:
        return self.status.is_finished()

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, {self.status.name}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens}, outputs={self.num_output_tokens})"
        )
