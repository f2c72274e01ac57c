"""Optimizer configuration and the one place that turns it into an optax chain."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import optax

from lm.optim.adamw import adamw
from lm.optim.clip import clip_by_global_norm
from lm.optim.masks import weight_decay_mask
from lm.optim.muon import muon
from lm.optim.schedules import Schedule, constant_schedule, cosine_schedule, wsd_schedule

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd", "constant")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Hyperparameters; invalid values raise ValueError naming the field.

    ``lr`` is AdamW's peak learning rate (for "muon": the rate of the
    embeddings, head and 1-D params); ``muon_lr`` is the peak rate of the
    Muon matrices. Both follow the same schedule shape.
    """

    name: str = "adamw"
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    schedule: str = "cosine"
    decay_fraction: float = 0.2  # wsd only: share of total steps spent decaying
    wsd_decay_shape: str = "linear"  # wsd only: "linear" | "cosine"
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    decay_embeddings: bool = True
    grad_clip: float = 1.0  # max global norm; 0 disables clipping
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    muon_nesterov: bool = True
    muon_ns_steps: int = 5

    def __post_init__(self):
        checks = [
            ("name", self.name in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            ("schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("wsd_decay_shape", self.wsd_decay_shape in ("linear", "cosine"), "'linear' or 'cosine'"),
            ("lr", _num(self.lr) and self.lr > 0, "> 0"),
            ("min_lr_ratio", _num(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1, "in [0, 1]"),
            ("warmup_steps", _int(self.warmup_steps) and self.warmup_steps >= 0, "an int >= 0"),
            ("decay_fraction", _num(self.decay_fraction) and 0 <= self.decay_fraction <= 1, "in [0, 1]"),
            ("b1", _num(self.b1) and 0 <= self.b1 < 1, "in [0, 1)"),
            ("b2", _num(self.b2) and 0 <= self.b2 < 1, "in [0, 1)"),
            ("eps", _num(self.eps) and self.eps > 0, "> 0"),
            ("weight_decay", _num(self.weight_decay) and self.weight_decay >= 0, ">= 0"),
            ("grad_clip", _num(self.grad_clip) and self.grad_clip >= 0, ">= 0 (0 disables)"),
            ("muon_lr", _num(self.muon_lr) and self.muon_lr > 0, "> 0"),
            ("muon_momentum", _num(self.muon_momentum) and 0 <= self.muon_momentum < 1, "in [0, 1)"),
            ("muon_ns_steps", _int(self.muon_ns_steps) and self.muon_ns_steps >= 1, "an int >= 1"),
        ]
        for field, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"OptimizerConfig.{field} must be {expected}, got {getattr(self, field)!r}"
                )


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def make_schedule(config: OptimizerConfig, total_steps: int, peak_lr: float) -> Schedule:
    """The configured schedule shape scaled to ``peak_lr``."""
    if config.schedule == "cosine":
        return cosine_schedule(peak_lr, total_steps, config.warmup_steps, config.min_lr_ratio)
    if config.schedule == "wsd":
        return wsd_schedule(
            peak_lr,
            total_steps,
            config.warmup_steps,
            config.decay_fraction,
            config.min_lr_ratio,
            config.wsd_decay_shape,
        )
    return constant_schedule(peak_lr, config.warmup_steps)


def build_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm (if grad_clip > 0) followed by AdamW or Muon+AdamW.

    Weight decay skips norms, biases and 1-D params (and embeddings when
    ``decay_embeddings`` is False); see ``lm.optim.masks``.
    """
    if not _int(total_steps) or total_steps < 1:
        raise ValueError(f"build_optimizer: total_steps must be an int >= 1, got {total_steps!r}")
    mask = functools.partial(weight_decay_mask, decay_embeddings=config.decay_embeddings)
    lr = make_schedule(config, total_steps, config.lr)
    if config.name == "adamw":
        opt = adamw(lr, config.b1, config.b2, config.eps, config.weight_decay, mask)
    else:
        opt = muon(
            make_schedule(config, total_steps, config.muon_lr),
            config.muon_momentum,
            config.muon_nesterov,
            config.muon_ns_steps,
            config.weight_decay,
            mask,
            adam_learning_rate=lr,
            adam_b1=config.b1,
            adam_b2=config.b2,
            adam_eps=config.eps,
            fan_in_axis=-2,  # lm.model stores kernels as [in, out] (x @ W)
        )
    if config.grad_clip > 0:
        return optax.chain(clip_by_global_norm(config.grad_clip), opt)
    return opt


def learning_rate_at(config: OptimizerConfig, total_steps: int, step: Any) -> jax.Array:
    """AdamW learning rate (``config.lr`` schedule) after ``step`` updates, for logging.

    The Muon rate is this times ``config.muon_lr / config.lr``.
    """
    return make_schedule(config, total_steps, config.lr)(step)
