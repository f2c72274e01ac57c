"""The train state: what one optimizer step reads and writes, and all that exact resume needs
besides the data position (which the checkpoint keeps beside it).

    state = TrainState(step=jnp.zeros([], jnp.int32), params=params, opt_state=optimizer.init(params))
    state.params, state.step
    as_train_state({"step": ..., "params": ..., "opt_state": ..., "rng": ...})   # an older dict state

A NamedTuple is a pytree to jax, optax and orbax, so it jits, donates and shards as a dict did.
Checkpoints store it as the dict {"step", "params", "opt_state"} (`to_tree`), the layout runs have
always been written in; states saved before this type also carried an "rng" that no step read,
and `lm.train.checkpoint` drops it as they load.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class TrainState(NamedTuple):
    step: Any  # int32 [] optimizer steps taken
    params: Any  # the model's parameter tree
    opt_state: Any  # the optimizer's state tree (optax)

    def __getitem__(self, key):
        # Read access by field name for code written against the dict state (`state["params"]`).
        return getattr(self, key) if isinstance(key, str) else tuple.__getitem__(self, key)

    def to_tree(self) -> dict:
        """The dict a checkpoint stores."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state}


def as_train_state(tree) -> TrainState:
    """A TrainState from itself or from a dict with step, params and opt_state (extra keys ignored)."""
    if isinstance(tree, TrainState):
        return tree
    if isinstance(tree, dict) and {"step", "params", "opt_state"} <= set(tree):
        return TrainState(tree["step"], tree["params"], tree["opt_state"])
    raise TypeError(f"expected a TrainState or a dict with step, params and opt_state, got {type(tree).__name__}")
