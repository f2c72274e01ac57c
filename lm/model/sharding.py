"""Optional activation sharding constraints by logical axis names.

The model marks a few activations with the names of their dimensions,
`constrain(x, ("batch", "seq", "heads", "head_dim"))`. Outside a
`sharding_rules` context this returns `x` itself, so single-device code is
unchanged; `lm.parallel` enters the context while it traces a sharded step, and
its resolver turns the names into a `with_sharding_constraint` from the rules
table. The model never names a mesh axis.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import jax

# names, shape -> Sharding, set only while lm.parallel traces a step.
_RESOLVER: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("lm_sharding_rules", default=None)


def constrain(x: jax.Array, names: tuple) -> jax.Array:
    """`x` constrained to the sharding its logical dimension `names` map to, if rules are active."""
    resolve = _RESOLVER.get()
    return x if resolve is None else jax.lax.with_sharding_constraint(x, resolve(names, x.shape))


@contextlib.contextmanager
def sharding_rules(resolve: Callable):
    """Within the block, `constrain` applies `resolve(names, shape) -> Sharding`."""
    token = _RESOLVER.set(resolve)
    try:
        yield
    finally:
        _RESOLVER.reset(token)
