"""Frozen configs of the alignment runs (command-line flags through `lm.config`).

Each holds a `train: TrainConfig` (steps, batch size, optimizer, evaluation, checkpoints, parallel
mesh: `--sft.train.optim.lr 1e-4`, `--grpo.train.parallel.fsdp 2`), with fine-tuning defaults: a
short warmup, no weight decay. The model comes from the policy being tuned.
"""

from __future__ import annotations

import dataclasses

from lm.align.policy_gradient import LOSS_TYPES
from lm.align.step import LENGTH_NORMS
from lm.config import check_choice, check_positive
from lm.model import ModelConfig
from lm.optim import OptimizerConfig
from lm.train.config import TrainConfig


def _optim(lr: float, warmup: int, schedule: str = "cosine") -> OptimizerConfig:
    return OptimizerConfig(lr=lr, warmup_steps=warmup, schedule=schedule, weight_decay=0.0, min_lr_ratio=0.1)


def fine_tuning(steps: int, batch_size: int, lr: float, warmup: int, schedule: str = "cosine", **kw) -> TrainConfig:
    """A TrainConfig with fine-tuning defaults: no weight decay, evaluation only at the end unless
    asked (`eval_every`), metrics every 10 steps, a checkpoint every 50. Its model is replaced by the
    policy's when the run starts."""
    base = dict(steps=steps, batch_size=batch_size, optim=_optim(lr, warmup, schedule), eval_every=0, log_every=10,
                save_every=50)
    return TrainConfig(**{**base, **kw})


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """train.batch_size: examples (or packed rows) per optimizer step."""

    train: TrainConfig = dataclasses.field(default_factory=lambda: fine_tuning(200, 32, 1e-3, 20))
    length_norm: str = "token"  # how response-token losses are averaged (lm.align.step.loss_weights)
    norm_constant: float = 0.0  # the divisor for length_norm="constant"
    pack: bool = False  # pack examples into rows of the context length instead of padding each

    def __post_init__(self):
        check_choice(self, "length_norm", LENGTH_NORMS)

    def train_config(self, model: ModelConfig) -> TrainConfig:
        return dataclasses.replace(self.train, model=model)


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """train.batch_size: preference pairs per optimizer step; held-out pairs are scored every train.eval_every."""

    train: TrainConfig = dataclasses.field(default_factory=lambda: fine_tuning(100, 32, 3e-4, 10, eval_every=10))
    beta: float = 0.1

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta must be > 0, got {self.beta}")

    def train_config(self, model: ModelConfig) -> TrainConfig:
        return dataclasses.replace(self.train, model=model)


def _grpo_train() -> TrainConfig:
    return fine_tuning(50, 128, 1e-4, 0, "constant", eval_every=10, log_every=1, save_every=10)


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """One GRPO step: sample `group_size` responses for each of `prompts_per_step` prompts, score them,
    then take `epochs` passes over the rollout batch in optimizer steps of `train.batch_size` rows.
    `train.steps` and `train.eval_every` count rollout steps."""

    train: TrainConfig = dataclasses.field(default_factory=_grpo_train)
    prompts_per_step: int = 16
    group_size: int = 8
    epochs: int = 1  # optimisation passes over each rollout batch (> 1 is off-policy: use grpo_clip)
    loss_type: str = "grpo_clip"
    cliprange: float = 0.2
    normalize_std: bool = True  # divide advantages by the group's std (False: Dr. GRPO)
    length_norm: str = "sequence"  # "sequence" (GRPO), "token" (DAPO) or "constant" (Dr. GRPO)
    kl_coef: float = 0.0  # weight of the k3 KL penalty to the frozen starting model
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    adv_eps: float = 1e-6

    def __post_init__(self):
        check_positive(self, "prompts_per_step", "group_size", "epochs", "max_new_tokens")
        if self.group_size < 2:
            raise ValueError("GRPOConfig.group_size must be >= 2: the group mean is the baseline")
        if self.rollout_size % self.train.batch_size:
            raise ValueError(f"GRPOConfig.train.batch_size={self.train.batch_size} must divide the rollout batch "
                             f"prompts_per_step * group_size = {self.rollout_size}")
        check_choice(self, "loss_type", LOSS_TYPES)
        check_choice(self, "length_norm", LENGTH_NORMS)
        if not 0 < self.cliprange < 1 or self.kl_coef < 0 or not self.temperature > 0:
            raise ValueError("GRPOConfig needs 0 < cliprange < 1, kl_coef >= 0, temperature > 0")

    @property
    def grad_accum(self) -> int:
        """Microbatches per optimizer step (the train config's; the GRPO step reads it here)."""
        return self.train.grad_accum

    @property
    def rollout_size(self) -> int:
        return self.prompts_per_step * self.group_size

    @property
    def optimizer_steps(self) -> int:
        return self.train.steps * self.epochs * (self.rollout_size // self.train.batch_size)

    def train_config(self, model: ModelConfig) -> TrainConfig:
        """The optimizer's config: its schedule spans every update of every rollout step."""
        return dataclasses.replace(self.train, model=model, steps=self.optimizer_steps)
