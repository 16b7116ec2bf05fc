"""The batched Sampler: penalties, min_tokens masking, greedy or seeded random choice, logprobs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from typing import Callable

from tokenmill.ops import OpRegistry
from tokenmill.sampling.logprobs import PositionLogprobs, rows_logprobs
from tokenmill.sampling.params import SamplingParams
from tokenmill.sampling.penalties import apply_penalties
from tokenmill.sampling.random_choice import index_tensor, sample_rows
from tokenmill.sampling.row_tensors import RowTensors
from tokenmill.sampling.static_sampler import static_sample
from tokenmill.sampling.token_filters import TokenFilters, apply_filters
from tokenmill.structured.matcher import GrammarState
from tokenmill.structured.token_mask import BatchMask


@dataclass(slots=True)
class SamplingRow:
    """One row of the logits handed to the Sampler: a running sequence (one completion).

    output_token_ids are the tokens generated before this step (used for penalties and
    min_tokens). generator comes from new_generator(params.seed, device) and must live as long
    as the sequence; None draws from the device's global RNG. The engine builds one row per
    sequence and reuses it every step (output_token_ids is the sequence's own growing list), so
    the params must not change after the row is built. grammar is the sequence's structured-output
    state (None: unconstrained) and filters its allowed_token_ids / bad_words / logit_bias.
    """

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    generator: torch.Generator | None = None
    grammar: GrammarState | None = None
    filters: TokenFilters | None = None
    num_pending: int = 0  # tokens sampled by a step still on the device (async scheduling); counted for min_tokens
    plain_greedy: bool = field(init=False)  # argmax with no penalties or logprobs (once past min_tokens)

    def __post_init__(self) -> None:
        p = self.params
        self.plain_greedy = p.is_greedy and p.logprobs is None and not p.has_penalties

    @property
    def num_outputs(self) -> int:
        """Tokens generated before this step, a pending one included."""
        return len(self.output_token_ids) + self.num_pending

    @property
    def reads_outputs(self) -> bool:
        """Its sampling reads the values of earlier outputs on the host (penalties, a grammar,
        multi-token bad words), so it cannot be sampled while its last token is pending."""
        sequences = self.filters is not None and bool(self.filters.sequences)
        return self.grammar is not None or self.params.has_penalties or sequences


@dataclass(slots=True)
class SamplerOutput:
    """Per row: the chosen token, its logprob entry (when params.logprobs is set) and its logprob.

    token_ids is an int64 device tensor [P] (P >= rows, padding last) as the "sample" op returns
    it, and a list of the rows' ids once the Sampler has read it back.

    logprobs[i] maps token id -> (logprob, rank 1-based): the sampled token first, then the top
    params.logprobs tokens. sampled_logprobs[i] is None for rows that did not ask for logprobs.
    Logprobs are of the raw model distribution (before penalties, temperature and truncation),
    as vLLM's default "raw_logprobs" mode reports them.
    """

    token_ids: list[int] | torch.Tensor
    logprobs: list[PositionLogprobs | None] = field(default_factory=list)
    sampled_logprobs: list[float | None] = field(default_factory=list)


class Sampler:
    """Chooses one token per row of a [B, V] logits batch, each row under its own SamplingParams.

    EOS ids are Sampler-level (one model, one set of EOS ids; from the model's generation config),
    not per row: min_tokens masks them (unless ignore_eos) together with the row's stop_token_ids.
    ignore_eos itself never masks EOS: as in vLLM, EOS may be sampled and the engine keeps going.
    top_k / top_p masking goes through the op registry's `top_k_top_p`, argmax through `argmax`, and
    the whole step through `sample`, so a plugin can replace any of them. The logits passed in may
    be modified in place.

    With `static` (static-shape platforms), rows with no penalties, no logprobs and no pending
    min_tokens are sampled by static_sampler, with fixed shapes and no host read; others take the
    general path. `sync` (the platform's ExecutionContext.sync) runs just before the sampled ids
    are read back to the host.
    """

    def __init__(self, eos_token_ids: list[int], ops: OpRegistry | None = None, static: bool = False,
                 sync: Callable[[], None] | None = None) -> None:
        self.eos_token_ids = list(eos_token_ids)
        self.ops = ops if ops is not None else OpRegistry()
        self.static = static
        self._sync = sync or (lambda: None)
        self._params = RowTensors()  # per-row parameter tensors of the last batch
        self._mask = BatchMask()

    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        """logits float32 [P, V] on any device (P >= len(rows), padding rows last) -> one token per row.

        Grammar masks go on first (through the "apply_token_bitmask" op), so whatever implements
        "sample" sees only the tokens each row's grammar allows, and logprobs are of that distribution.
        """
        out = self.launch(logits, rows)
        self._sync()
        out.token_ids = out.token_ids.tolist()
        return out

    def launch(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        """As calling the sampler, but token_ids stays an int64 device tensor [len(rows)], not read back.

        Logprobs, where rows ask for them, are still read on the host here.
        """
        self._mask.apply(logits, rows, self.ops)
        out = self.ops.sample(self, logits, rows)
        out.token_ids = out.token_ids[: len(rows)]
        return out

    def choose(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        """The core's sampling step (the "sample" op's reference); token_ids stays on the device."""
        num_rows = len(rows)
        simple = all(row.num_outputs >= row.params.min_tokens for row in rows)
        if simple and all(row.plain_greedy for row in rows):
            apply_filters(logits, rows)
            return SamplerOutput(self.ops.argmax(logits), [None] * num_rows, [None] * num_rows)
        if self.static and simple and all(r.params.logprobs is None and not r.params.has_penalties for r in rows):
            apply_filters(logits, rows)
            return SamplerOutput(static_sample(logits, rows, self.ops, self._params), [None] * num_rows, [None] * num_rows)
        logits = logits[:num_rows]  # the general path works on the real rows alone
        want_lp = [i for i, row in enumerate(rows) if row.params.logprobs is not None]
        raw_lp = self._raw_logprobs(logits, want_lp)  # [L, V], before any processing
        apply_filters(logits, rows)  # after raw logprobs, as vLLM reports them
        logits = self._apply_penalties(logits, rows)
        self._mask_min_tokens(logits, rows)
        token_ids = self._choose(logits, rows)  # int64 [B]
        return self._output(token_ids, rows, want_lp, raw_lp)

    def _raw_logprobs(self, logits: torch.Tensor, want_lp: list[int]) -> torch.Tensor | None:
        if not want_lp:
            return None
        if len(want_lp) == logits.shape[0]:
            return logits.log_softmax(dim=-1)  # [B, V]
        return logits[index_tensor(want_lp, logits.device)].log_softmax(dim=-1)  # [L, V]

    def _apply_penalties(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        penalised = [i for i, row in enumerate(rows) if row.params.has_penalties]
        if not penalised:
            return logits
        sel = [rows[i] for i in penalised]
        whole = len(penalised) == len(rows)
        index = index_tensor(penalised, logits.device)  # [P]
        sub = apply_penalties(
            logits if whole else logits.index_select(0, index),  # [P, V]
            [r.prompt_token_ids for r in sel],
            [r.output_token_ids for r in sel],
            [r.params.repetition_penalty for r in sel],
            [r.params.presence_penalty for r in sel],
            [r.params.frequency_penalty for r in sel],
        )
        return logits if whole else logits.index_copy_(0, index, sub)

    def _mask_min_tokens(self, logits: torch.Tensor, rows: list[SamplingRow]) -> None:
        row_idx: list[int] = []
        tok_idx: list[int] = []
        for i, row in enumerate(rows):
            p = row.params
            if row.num_outputs < p.min_tokens:
                stops = p.stop_token_ids + ([] if p.ignore_eos else self.eos_token_ids)
                stops = [t for t in stops if t < logits.shape[1]]
                row_idx += [i] * len(stops)
                tok_idx += stops
        if row_idx:
            logits[index_tensor(row_idx, logits.device), index_tensor(tok_idx, logits.device)] = float("-inf")

    def _choose(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        greedy = [i for i, row in enumerate(rows) if row.params.is_greedy]
        if len(greedy) == len(rows):
            return self.ops.argmax(logits)
        if not greedy:
            return sample_rows(logits, rows, self.ops, self._params)
        others = [i for i, row in enumerate(rows) if not row.params.is_greedy]
        r_idx = index_tensor(others, logits.device)  # [R]
        out = self.ops.argmax(logits)  # [B]; one read of the batch beats copying out the greedy rows
        drawn = sample_rows(logits.index_select(0, r_idx), [rows[i] for i in others], self.ops, self._params)  # [R]
        return out.index_copy_(0, r_idx, drawn)

    def _output(
        self, token_ids: torch.Tensor, rows: list[SamplingRow], want_lp: list[int], raw_lp: torch.Tensor | None
    ) -> SamplerOutput:
        logprobs: list[PositionLogprobs | None] = [None] * len(rows)
        sampled: list[float | None] = [None] * len(rows)
        if raw_lp is not None:
            ids = token_ids.tolist()  # logprob entries are built on the host
            chosen = token_ids.index_select(0, index_tensor(want_lp, token_ids.device))  # [L]
            entries = rows_logprobs(raw_lp, chosen, [rows[i].params.logprobs for i in want_lp])
            for i, entry in zip(want_lp, entries):
                logprobs[i] = entry
                sampled[i] = entry[ids[i]][0]
        return SamplerOutput(token_ids, logprobs, sampled)

