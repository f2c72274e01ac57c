"""Learning-rate schedules: pure ``step -> lr`` functions, safe under jit.

``step`` counts updates already applied (optax convention: 0 on the first
update). Warmup is linear from 0 at step 0 to ``peak_lr`` at
``warmup_steps`` (as in the CS336 handout); ``warmup_steps=0`` starts at
peak. Steps past ``total_steps`` hold the final value. If warmup is longer
than the run, the run simply ends partway up the ramp.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

Schedule = Callable[[jax.Array], jax.Array]


def _warmup_factor(step: jax.Array, warmup_steps: int) -> jax.Array:
    if warmup_steps <= 0:
        return jnp.ones_like(step)
    return jnp.minimum(step / warmup_steps, 1.0)


def _as_float(step) -> jax.Array:
    return jnp.asarray(step, jnp.float32)


def constant_schedule(peak_lr: float, warmup_steps: int = 0) -> Schedule:
    """Linear warmup to ``peak_lr``, then constant."""

    def schedule(step):
        return peak_lr * _warmup_factor(_as_float(step), warmup_steps)

    return schedule


def cosine_schedule(
    peak_lr: float, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1
) -> Schedule:
    """Linear warmup, then half-cosine from ``peak_lr`` to ``min_lr_ratio * peak_lr``.

    lr(warmup_steps) = peak_lr, lr(total_steps) = min_lr_ratio * peak_lr.
    """
    min_lr = min_lr_ratio * peak_lr
    decay_steps = max(total_steps - warmup_steps, 1)

    def schedule(step):
        step = _as_float(step)
        progress = jnp.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = min_lr + 0.5 * (peak_lr - min_lr) * (1 + jnp.cos(math.pi * progress))
        return jnp.where(step < warmup_steps, peak_lr * _warmup_factor(step, warmup_steps), cosine)

    return schedule


def wsd_schedule(
    peak_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    decay_fraction: float = 0.2,
    min_lr_ratio: float = 0.0,
    decay_shape: str = "linear",
) -> Schedule:
    """Warmup-stable-decay (Hu et al., 2024, MiniCPM).

    Linear warmup, a plateau at ``peak_lr``, then over the last
    ``round(decay_fraction * total_steps)`` steps a ``"linear"`` or
    ``"cosine"`` fall to ``min_lr_ratio * peak_lr`` reached at ``total_steps``.
    The plateau lets one checkpoint be branched into decays of any length.
    """
    if decay_shape not in ("linear", "cosine"):
        raise ValueError(f"decay_shape must be 'linear' or 'cosine', got {decay_shape!r}")
    min_lr = min_lr_ratio * peak_lr
    decay_steps = int(round(decay_fraction * total_steps))
    # The decay never eats into warmup; a too-short run just decays less.
    decay_start = max(total_steps - decay_steps, warmup_steps)
    decay_len = max(total_steps - decay_start, 1)

    def schedule(step):
        step = _as_float(step)
        progress = jnp.clip((step - decay_start) / decay_len, 0.0, 1.0)
        if decay_shape == "linear":
            frac = 1.0 - progress
        else:
            frac = 0.5 * (1 + jnp.cos(math.pi * progress))
        stable_or_decay = min_lr + (peak_lr - min_lr) * frac
        return jnp.where(step < warmup_steps, peak_lr * _warmup_factor(step, warmup_steps), stable_or_decay)

    return schedule
