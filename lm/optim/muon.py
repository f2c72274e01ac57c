"""Muon: momentum orthogonalised by a Newton-Schulz iteration (Keller Jordan, 2024).

For a hidden weight matrix, Muon replaces the momentum M = U S V^T by
(approximately) U V^T: every singular direction moves by the same amount,
so rare directions are not drowned out by dominant ones. Embeddings, the
output head and non-matrix params (norm gains, biases) are not suited to
this and are trained with our AdamW instead.

References: https://kellerjordan.github.io/posts/muon/ and
modded-nanogpt (github.com/KellerJordan/modded-nanogpt).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import optax

from lm.optim.adamw import ScalarOrSchedule, adamw, decoupled_weight_decay, resolve
from lm.optim.masks import EMBEDDING_NAMES, path_names, stacked_axes

PyTree = Any

# Quintic coefficients tuned by Keller Jordan to push singular values in
# (0, 1] towards ~[0.7, 1.2] in 5 steps as fast as possible, trading exact
# convergence to 1 for speed (the update does not need to be exact).
NS_COEFFS = (3.4445, -4.7750, 2.0315)
HEAD_NAMES: tuple[str, ...] = ("head", "lm_head", "output", "unembed", "unembedding")


def newton_schulz(g: jax.Array, steps: int = 5, eps: float = 1e-7) -> jax.Array:
    """Approximate U V^T of g = U S V^T.

    Args:
      g: [..., rows, cols]; leading axes are batched.
    Returns:
      [..., rows, cols] in g.dtype, singular values roughly in [0.7, 1.2].

    Runs in float32. Dividing by the Frobenius norm bounds the spectral
    norm by 1, inside the iteration's basin. Wide orientation (rows <= cols)
    keeps the Gram matrix X X^T at the smaller size min(rows, cols)^2.
    """
    a, b, c = NS_COEFFS
    x = g.astype(jnp.float32)
    tall = g.shape[-2] > g.shape[-1]
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + eps)
    for _ in range(steps):
        gram = x @ jnp.swapaxes(x, -1, -2)
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = jnp.swapaxes(x, -1, -2)
    return x.astype(g.dtype)


def shape_scale(shape: Sequence[int], fan_in_axis: int = -1) -> float:
    """sqrt(max(1, fan_out / fan_in)), modded-nanogpt's per-matrix gain.

    An orthogonalised [rows, cols] matrix has entry RMS 1/sqrt(max(rows, cols));
    this gain makes the RMS 1/sqrt(fan_in) for every shape, i.e. the update's
    spectral norm is sqrt(fan_out / fan_in) as for a well-scaled layer.
    With the default ``fan_in_axis=-1`` (PyTorch / CS336 [d_out, d_in]
    layout) this is max(1, rows / cols) ** 0.5, exactly Keller Jordan's
    formula; pass ``fan_in_axis=-2`` for [d_in, d_out] (x @ W) layouts.
    """
    rows, cols = shape[-2], shape[-1]
    fan_in, fan_out = (cols, rows) if fan_in_axis == -1 else (rows, cols)
    return max(1.0, fan_out / fan_in) ** 0.5


# Attention projections are stored per head, [embed, heads, head_dim] and [heads, head_dim, embed],
# but each is one linear map, so Muon orthogonalises it as that matrix.
HEADS_OUT_NAMES: tuple[str, ...] = ("wq", "wk", "wv")
HEADS_IN_NAMES: tuple[str, ...] = ("wo",)


def matrix_shape(path: Sequence[Any], shape: Sequence[int]) -> Optional[tuple[int, ...]]:
    """The [fan_in, fan_out] view Muon uses for a parameter, or None if it is not a matrix.

    Layers stacked on leading axes (`stacked_axes`: lm.model's "blocks") stay leading axes of the
    view, [layers, fan_in, fan_out], and each layer's matrix is orthogonalised on its own.
    """
    lead = stacked_axes(path)
    stack, shape = tuple(shape[:lead]), tuple(shape[lead:])
    names = path_names(path)
    if len(shape) == 2:
        return stack + shape
    if len(shape) == 3 and names and names[-1] in HEADS_OUT_NAMES:
        return stack + (shape[0], shape[1] * shape[2])
    if len(shape) == 3 and names and names[-1] in HEADS_IN_NAMES:
        return stack + (shape[0] * shape[1], shape[2])
    return None


def _orthogonalise(path, d: jax.Array, ns_steps: int, fan_in_axis: int) -> jax.Array:
    view = matrix_shape(path, d.shape) or d.shape  # unnamed leaves: [..., rows, cols] batches
    m = d.reshape(view)
    return (newton_schulz(m, ns_steps) * shape_scale(m.shape, fan_in_axis)).reshape(d.shape)


class MuonState(NamedTuple):
    """count: int32 []; mu: momentum buffers shaped like the params."""

    count: jax.Array
    mu: PyTree


def orthogonal_momentum(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Optional[Union[PyTree, Callable[[PyTree], PyTree]]] = None,
    fan_in_axis: int = -1,
) -> optax.GradientTransformation:
    """Muon's update for a pytree of matrices [..., rows, cols] (no AdamW part).

    buf <- momentum * buf + g;  m = g + momentum * buf if nesterov else buf
    u   <- -lr * (newton_schulz(m) * shape_scale + wd * param)
    """

    def init_fn(params: PyTree) -> MuonState:
        mu = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), params)
        return MuonState(count=jnp.zeros([], jnp.int32), mu=mu)

    def update_fn(updates: PyTree, state: MuonState, params: PyTree = None):
        mu = jax.tree.map(lambda g, m: momentum * m + g.astype(jnp.float32), updates, state.mu)
        if nesterov:
            direction = jax.tree.map(lambda g, m: g.astype(jnp.float32) + momentum * m, updates, mu)
        else:
            direction = mu
        new = jax.tree_util.tree_map_with_path(
            lambda path, d, g: _orthogonalise(path, d, ns_steps, fan_in_axis).astype(g.dtype),
            direction,
            updates,
        )
        if not (isinstance(weight_decay, (int, float)) and weight_decay == 0):
            if params is None:
                raise ValueError("muon with weight decay needs params in update().")
            new = decoupled_weight_decay(new, params, resolve(weight_decay, state.count), mask)
        lr = resolve(learning_rate, state.count)
        new = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), new)
        return new, MuonState(count=state.count + 1, mu=mu)

    return optax.GradientTransformation(init_fn, update_fn)


def muon_labels(
    params: PyTree,
    exclude_fragments: Sequence[str] = EMBEDDING_NAMES,
    exclude_names: Sequence[str] = HEAD_NAMES,
) -> PyTree:
    """Pytree of "muon" (hidden matrices) or "adamw" (everything else).

    A leaf goes to AdamW if it is not a matrix (`matrix_shape`: 2-D, or a
    per-head attention projection), or a key on its path contains one
    of ``exclude_fragments`` (embeddings), or equals one of ``exclude_names``
    or ends in "_head" (output head). Head names are matched whole so that
    e.g. "multihead_attn" stays with Muon.
    """

    def label(path, leaf) -> str:
        names = path_names(path)
        excluded = any(
            any(frag in name for frag in exclude_fragments)
            or name in exclude_names
            or name.endswith("_head")
            for name in names
        )
        return "muon" if matrix_shape(path, leaf.shape) is not None and not excluded else "adamw"

    return jax.tree_util.tree_map_with_path(label, params)


def muon(
    learning_rate: ScalarOrSchedule = 0.02,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_steps: int = 5,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Optional[Union[PyTree, Callable[[PyTree], PyTree]]] = None,
    *,
    adam_learning_rate: ScalarOrSchedule = 3e-4,
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    adam_eps: float = 1e-8,
    adam_weight_decay: Optional[ScalarOrSchedule] = None,
    label_fn: Callable[[PyTree], PyTree] = muon_labels,
    fan_in_axis: int = -1,
) -> optax.GradientTransformation:
    """Muon on the leaves ``label_fn`` calls "muon", our AdamW on the "adamw" rest.

    ``weight_decay`` and ``mask`` apply to both halves (``adam_weight_decay``
    overrides the AdamW half). Learning rates are separate because Muon's
    updates have unit spectral scale while Adam's have unit entry scale:
    typical values are 0.02 and 3e-4 to 3e-3.
    """
    adam_wd = weight_decay if adam_weight_decay is None else adam_weight_decay
    return optax.multi_transform(
        {
            "muon": orthogonal_momentum(
                learning_rate, momentum, nesterov, ns_steps, weight_decay, mask, fan_in_axis
            ),
            "adamw": adamw(adam_learning_rate, adam_b1, adam_b2, adam_eps, adam_wd, mask),
        },
        label_fn,
    )
