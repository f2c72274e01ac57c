"""Optimizers, schedules, clipping and weight-decay masks (all optax-compatible)."""

from lm.optim.adamw import AdamWState, adamw
from lm.optim.clip import clip_by_global_norm, global_norm
from lm.optim.config import OptimizerConfig, build_optimizer, learning_rate_at, make_schedule
from lm.optim.masks import weight_decay_mask
from lm.optim.muon import muon, muon_labels, newton_schulz
from lm.optim.schedules import constant_schedule, cosine_schedule, wsd_schedule

__all__ = [
    "AdamWState",
    "OptimizerConfig",
    "adamw",
    "build_optimizer",
    "clip_by_global_norm",
    "constant_schedule",
    "cosine_schedule",
    "global_norm",
    "learning_rate_at",
    "make_schedule",
    "muon",
    "muon_labels",
    "newton_schulz",
    "weight_decay_mask",
    "wsd_schedule",
]
