"""AdamW (Loshchilov & Hutter) as an ``optax.GradientTransformation``.

Written out rather than wrapping ``optax.adamw`` so the update is readable
in one place; it follows ``optax.adamw``'s conventions (weight decay is
multiplied by the learning rate, schedules are called with the number of
updates applied so far) so the two agree to float32 round-off.

Per leaf, with g the gradient and t = count + 1::

    mu <- b1 * mu + (1 - b1) * g
    nu <- b2 * nu + (1 - b2) * g**2
    u  <- -lr(t - 1) * (mu / (1 - b1**t) / (sqrt(nu / (1 - b2**t)) + eps) + wd * param)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from lm.optim.masks import broadcast_mask

PyTree = Any
ScalarOrSchedule = Union[float, Callable[[jax.Array], jax.Array]]


class AdamWState(NamedTuple):
    """count: int32 []; mu, nu: pytrees shaped like params."""

    count: jax.Array
    mu: PyTree
    nu: PyTree


def resolve(value: ScalarOrSchedule, count: jax.Array) -> jax.Array:
    """Value of a float-or-schedule hyperparameter at step ``count``."""
    return value(count) if callable(value) else jnp.asarray(value)


def decoupled_weight_decay(
    updates: PyTree, params: PyTree, weight_decay: jax.Array, mask: Any
) -> PyTree:
    """``updates + weight_decay * params`` where ``mask`` is True, else ``updates``."""

    def decay(u, p, m):
        if isinstance(m, bool):  # static mask: skip the work entirely
            return u + (weight_decay * p).astype(u.dtype) if m else u
        return u + jnp.where(m, weight_decay * p, 0).astype(u.dtype)

    return jax.tree.map(decay, updates, params, broadcast_mask(mask, params))


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Optional[Union[PyTree, Callable[[PyTree], PyTree]]] = None,
    *,
    eps_root: float = 0.0,
    mu_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
    """AdamW with bias correction and decoupled, learning-rate-scaled weight decay.

    Args:
      learning_rate: float, or schedule ``step -> lr`` called with the number
        of updates applied before this one (0 on the first update).
      b1, b2: decay rates of the first and second moment estimates.
      eps: added to sqrt(nu_hat) in the denominator.
      weight_decay: float or schedule; the update gains ``lr * wd * param``.
      mask: pytree of bools (same structure as params, or a prefix of it) or
        a callable ``params -> such pytree``; True = apply weight decay.
      eps_root: added to nu_hat inside the square root (for meta-gradients).
      mu_dtype: dtype of the first moment; None keeps the gradient dtype.

    Returns:
      ``optax.GradientTransformation`` with state ``AdamWState``. ``update``
      needs ``params`` whenever weight decay is nonzero.
    """
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init_fn(params: PyTree) -> AdamWState:
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype), params)
        nu = jax.tree.map(jnp.zeros_like, params)
        return AdamWState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

    def update_fn(updates: PyTree, state: AdamWState, params: PyTree = None):
        count = state.count + 1
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * (g * g) + b2 * v, updates, state.nu)
        # Corrections are computed in float32 then cast, so bf16 moments do
        # not lose the tiny 1 - b**t of early steps.
        c1 = 1 - jnp.asarray(b1, jnp.float32) ** count
        c2 = 1 - jnp.asarray(b2, jnp.float32) ** count
        new = jax.tree.map(
            lambda m, v: (m / c1.astype(m.dtype))
            / (jnp.sqrt(v / c2.astype(v.dtype) + eps_root) + eps),
            mu,
            nu,
        )
        if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
            if params is None:
                raise ValueError("adamw with weight decay needs params in update().")
            new = decoupled_weight_decay(
                new, params, resolve(weight_decay, state.count), mask
            )
        lr = resolve(learning_rate, state.count)
        new = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), new)
        if mu_dtype is not None:
            mu = jax.tree.map(lambda m: m.astype(mu_dtype), mu)
        nu = jax.tree.map(lambda v, old: v.astype(old.dtype), nu, state.nu)
        return new, AdamWState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)
