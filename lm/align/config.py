"""Frozen configs of the alignment runs (command-line flags through `lm.config`).

Fine-tuning defaults differ from pretraining: a short warmup, no weight decay,
and the optimizer settings nested under `optim` (`--optim.lr 1e-4`).
"""

from __future__ import annotations

import dataclasses

from lm.align.policy_gradient import LOSS_TYPES
from lm.align.step import LENGTH_NORMS
from lm.model import ModelConfig
from lm.optim import OptimizerConfig
from lm.train.config import TrainConfig


def _optim(lr: float, warmup: int, schedule: str = "cosine") -> OptimizerConfig:
    return OptimizerConfig(lr=lr, warmup_steps=warmup, schedule=schedule, weight_decay=0.0, min_lr_ratio=0.1)


def _positive(obj, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(obj, name)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be a positive integer, got {v!r}")


@dataclasses.dataclass(frozen=True)
class _StepsConfig:
    """Optimizer steps over batches of `batch_size` rows, each in `grad_accum` microbatches."""

    steps: int = 200
    batch_size: int = 32
    grad_accum: int = 1
    seed: int = 0
    optim: OptimizerConfig = dataclasses.field(default_factory=lambda: _optim(1e-3, 20))

    def __post_init__(self):
        _positive(self, ("steps", "batch_size", "grad_accum"))
        if self.batch_size % self.grad_accum:
            raise ValueError(f"{type(self).__name__}.batch_size={self.batch_size} must be divisible by "
                             f"grad_accum={self.grad_accum}")

    def train_config(self, model: ModelConfig) -> TrainConfig:
        return TrainConfig(model=model, optim=self.optim, steps=self.steps, batch_size=self.batch_size,
                           grad_accum=self.grad_accum, seed=self.seed)


@dataclasses.dataclass(frozen=True)
class SFTConfig(_StepsConfig):
    """batch_size: examples (or packed rows) per optimizer step."""

    length_norm: str = "token"  # how response-token losses are averaged (lm.align.step.loss_weights)
    norm_constant: float = 0.0  # the divisor for length_norm="constant"
    pack: bool = False  # pack examples into rows of the context length instead of padding each

    def __post_init__(self):
        super().__post_init__()
        if self.length_norm not in LENGTH_NORMS:
            raise ValueError(f"SFTConfig.length_norm must be one of {LENGTH_NORMS}, got {self.length_norm!r}")


@dataclasses.dataclass(frozen=True)
class DPOConfig(_StepsConfig):
    """batch_size: preference pairs per optimizer step."""

    steps: int = 100
    beta: float = 0.1
    optim: OptimizerConfig = dataclasses.field(default_factory=lambda: _optim(3e-4, 10))

    def __post_init__(self):
        super().__post_init__()
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta must be > 0, got {self.beta}")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """One GRPO step: sample `group_size` responses for each of `prompts_per_step` prompts, score them,
    then take `epochs` passes over the rollout batch in optimizer steps of `train_batch_size` rows."""

    steps: int = 50  # rollout steps
    prompts_per_step: int = 16
    group_size: int = 8
    epochs: int = 1  # optimisation passes over each rollout batch (> 1 is off-policy: use grpo_clip)
    train_batch_size: int = 128  # rows per optimizer step; must divide prompts_per_step * group_size
    grad_accum: int = 1
    loss_type: str = "grpo_clip"
    cliprange: float = 0.2
    normalize_std: bool = True  # divide advantages by the group's std (False: Dr. GRPO)
    length_norm: str = "sequence"  # "sequence" (GRPO), "token" (DAPO) or "constant" (Dr. GRPO)
    kl_coef: float = 0.0  # weight of the k3 KL penalty to the frozen starting model
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    adv_eps: float = 1e-6
    eval_every: int = 10  # rollout steps between held-out evaluations (0: only at the end)
    seed: int = 0
    optim: OptimizerConfig = dataclasses.field(default_factory=lambda: _optim(1e-4, 0, "constant"))

    def __post_init__(self):
        _positive(self, ("steps", "prompts_per_step", "group_size", "epochs", "train_batch_size", "grad_accum",
                         "max_new_tokens"))
        if self.group_size < 2:
            raise ValueError("GRPOConfig.group_size must be >= 2: the group mean is the baseline")
        if self.rollout_size % self.train_batch_size:
            raise ValueError(f"GRPOConfig.train_batch_size={self.train_batch_size} must divide the rollout batch "
                             f"prompts_per_step * group_size = {self.rollout_size}")
        if self.train_batch_size % self.grad_accum:
            raise ValueError(f"GRPOConfig.train_batch_size={self.train_batch_size} must be divisible by "
                             f"grad_accum={self.grad_accum}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"GRPOConfig.loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.length_norm not in LENGTH_NORMS:
            raise ValueError(f"GRPOConfig.length_norm must be one of {LENGTH_NORMS}, got {self.length_norm!r}")
        if not 0 < self.cliprange < 1 or self.kl_coef < 0 or not self.temperature > 0 or self.eval_every < 0:
            raise ValueError("GRPOConfig needs 0 < cliprange < 1, kl_coef >= 0, temperature > 0, eval_every >= 0")

    @property
    def rollout_size(self) -> int:
        return self.prompts_per_step * self.group_size

    @property
    def optimizer_steps(self) -> int:
        return self.steps * self.epochs * (self.rollout_size // self.train_batch_size)

    def train_config(self, model: ModelConfig) -> TrainConfig:
        return TrainConfig(model=model, optim=self.optim, steps=self.optimizer_steps,
                           batch_size=self.train_batch_size, grad_accum=self.grad_accum, seed=self.seed)
