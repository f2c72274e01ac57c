"""Training run configuration: model, optimizer and loop settings in one frozen tree."""

from __future__ import annotations

import dataclasses

from lm.config import check_positive
from lm.model import ModelConfig
from lm.optim import OptimizerConfig
from lm.parallel.config import ParallelConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    steps: int = 1000
    batch_size: int = 16  # sequences per optimizer step (all microbatches together)
    grad_accum: int = 1  # microbatches per step; batch_size must divide by it
    seed: int = 0
    z_loss: float = 0.0
    # Tokens per chunk of the fused output projection + cross-entropy (lm.train.loss.linear_cross_entropy);
    # 0 computes the full [batch, seq, vocab] logits and then the loss.
    loss_chunk: int = 512
    moe_aux_weight: float = 0.01  # weight of the MoE load-balancing loss, if the model has experts
    # Packed documents: with an end-of-text id (set from the tokenizer by experiments.pretrain), attention
    # stays inside each document of a window, RoPE positions restart at 0 in each, and no document's first
    # token is predicted from the previous one. -1: the corpus has no such token, windows are one sequence.
    eot_token: int = -1
    document_mask: bool = True
    eval_every: int = 200  # steps between evaluations (0: only at the end)
    eval_batches: int = 20  # validation batches per evaluation (0: the whole split)
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    async_checkpoints: bool = True
    peak_flops: float = 0.0  # device peak FLOP/s for MFU; 0: published, or measured once and cached
    tensorboard: bool = False
    # Mesh axes and collectives (`--parallel.fsdp 8`); the default is one device, unsharded.
    parallel: ParallelConfig = dataclasses.field(default_factory=ParallelConfig)

    def __post_init__(self):
        check_positive(self, "steps", "batch_size", "grad_accum", "log_every", "save_every", "keep_checkpoints")
        check_positive(self, "eval_every", zero=True)
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"TrainConfig.batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum} "
                "(each microbatch gets batch_size // grad_accum sequences)"
            )
        if not isinstance(self.eot_token, int) or self.eot_token < -1 or self.eot_token >= self.model.vocab_size:
            raise ValueError(f"TrainConfig.eot_token={self.eot_token!r} must be -1 (none) or a token id below "
                             f"model.vocab_size={self.model.vocab_size}")
        if self.eval_batches < 0 or self.z_loss < 0 or self.peak_flops < 0 or self.loss_chunk < 0:
            raise ValueError("TrainConfig.eval_batches, z_loss, peak_flops and loss_chunk must be >= 0")

    @property
    def documents(self) -> bool:
        """Whether training windows are split into documents at `eot_token`."""
        return self.document_mask and self.eot_token >= 0

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.model.context_length
