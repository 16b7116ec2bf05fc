"""What the static_toy device was handed: the distinct step shapes and the number of syncs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ShapeRecorder:
    """Distinct (T, B, W) shapes of the batches build_metadata saw, the step runner's token counts, syncs."""

    batch_shapes: set[tuple[int, int, int]] = field(default_factory=set)
    step_tokens: set[int] = field(default_factory=set)
    batches: list = field(default_factory=list)  # every AttentionBatch, when `keep_batches`
    keep_batches: bool = False
    syncs: int = 0
    steps: int = 0
    warmup_steps: int = 0  # dummy steps the step runner ran at start-up

    def record_batch(self, batch) -> None:
        """Note one step's padded shape (and keep the batch itself if asked)."""
        shape = (int(batch.slot_mapping.shape[0]), int(batch.seq_lens.shape[0]), int(batch.block_tables.shape[1]))
        self.batch_shapes.add(shape)
        if self.keep_batches:
            self.batches.append(batch)

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.batch_shapes.clear()
        self.step_tokens.clear()
        self.batches.clear()
        self.syncs = self.steps = self.warmup_steps = 0


RECORDER = ShapeRecorder()
