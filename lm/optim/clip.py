"""Global-norm gradient clipping (Pascanu et al., 2013)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any


def global_norm(tree: PyTree) -> jax.Array:
    """L2 norm of all leaves concatenated, as float32 [] (bf16 squares would overflow)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros([], jnp.float32)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Rescale updates so their global norm is at most ``max_norm``.

    Updates with norm <= max_norm pass unchanged; larger ones are multiplied
    by ``max_norm / norm``, which keeps their direction. Stateless.
    """
    if max_norm <= 0:
        raise ValueError(f"clip_by_global_norm: max_norm must be > 0, got {max_norm}")

    def init_fn(params: PyTree) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: PyTree, state: optax.EmptyState, params: PyTree = None):
        del params
        # max(norm, max_norm) in the denominator gives factor 1 below the
        # threshold without a branch and never divides by zero.
        norm = global_norm(updates)
        factor = max_norm / jnp.maximum(norm, max_norm)
        return jax.tree.map(lambda g: (g * factor).astype(g.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)
