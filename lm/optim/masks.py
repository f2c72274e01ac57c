"""Which parameters get weight decay, decided from key paths and ranks.

Params are nested dicts of arrays (``lm.model.init``). Decaying norm gains
and biases pulls them towards zero rather than towards their natural value
(1 for gains), which only hurts, so they are excluded. Embeddings are
sometimes excluded too because rows of rare tokens receive few gradient
updates and decay would erase them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax

PyTree = Any

NO_DECAY_NAMES: tuple[str, ...] = ("norm", "bias", "scale")
EMBEDDING_NAMES: tuple[str, ...] = ("embed", "wte", "wpe")
# Subtrees whose leaves stack one tensor per layer on a leading axis (lm.model's "blocks").
STACKED_NAMES: tuple[str, ...] = ("blocks",)


def path_names(path: Sequence[Any]) -> tuple[str, ...]:
    """Lower-cased names of a ``jax.tree_util`` key path (dict keys, attrs, indices)."""
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)).lower())
                break
        else:
            names.append(str(entry).lower())
    return tuple(names)


def stacked_axes(path: Sequence[Any]) -> int:
    """How many leading axes of the leaf at `path` stack layers (1 under "blocks", else 0): a
    per-layer matrix stacked as [layers, rows, cols] is still a matrix, a gain [layers, d] a vector."""
    return sum(name in STACKED_NAMES for name in path_names(path))


def _has_name(names: Sequence[str], fragments: Sequence[str]) -> bool:
    return any(fragment in name for name in names for fragment in fragments)


def weight_decay_mask(params: PyTree, decay_embeddings: bool = True) -> PyTree:
    """Pytree of bools with the structure of ``params``: True where to decay.

    A leaf is *not* decayed if it has ndim <= 1 (norm gains, biases,
    scalars; not counting a stacked-layers axis, `stacked_axes`) or any key
    on its path contains "norm", "bias" or "scale";
    with ``decay_embeddings=False`` also if a key contains "embed", "wte" or
    "wpe". Leaves may be arrays or ``jax.ShapeDtypeStruct``s (only ``ndim``
    or ``shape`` is read), so this works on abstract params and inside jit.
    """

    def decide(path, leaf) -> bool:
        names = path_names(path)
        ndim = getattr(leaf, "ndim", len(getattr(leaf, "shape", ()))) - stacked_axes(path)
        if ndim <= 1 or _has_name(names, NO_DECAY_NAMES):
            return False
        if not decay_embeddings and _has_name(names, EMBEDDING_NAMES):
            return False
        return True

    return jax.tree_util.tree_map_with_path(decide, params)


def broadcast_mask(
    mask: PyTree | Callable[[PyTree], PyTree] | None, params: PyTree
) -> PyTree:
    """Expand ``mask`` (None, pytree prefix of bools, or callable) to ``params``' structure.

    The mask is mapped first, as a prefix tree, so a bool at an inner node
    covers its whole subtree, and so that masks built for the full params
    still line up with the pruned trees ``optax.multi_transform`` hands to
    its inner transforms (pruned leaves become empty ``MaskedNode``s).
    """
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    if callable(mask):
        mask = mask(params)
    return jax.tree.map(lambda m, sub: jax.tree.map(lambda _: m, sub), mask, params)
