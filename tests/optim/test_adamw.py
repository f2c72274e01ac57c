import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lm.optim import AdamWState, adamw, cosine_schedule, weight_decay_mask

from . import toy_lm


@pytest.fixture(scope="module")
def problem():
    params = toy_lm.init_params(jax.random.PRNGKey(0))
    tokens = toy_lm.make_tokens(jax.random.PRNGKey(1))
    return params, functools.partial(toy_lm.loss_fn, tokens=tokens)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(learning_rate=1e-2, b1=0.8, eps=1e-6, weight_decay=0.1),
        dict(learning_rate=cosine_schedule(1e-2, 100, 10, 0.1), b2=0.95, weight_decay=0.1,
             mask=weight_decay_mask),
    ],
    ids=["constant", "schedule+mask"],
)
def test_matches_optax_adamw_over_100_steps(problem, kwargs):
    params, loss = problem
    (ours, _, losses), (ref, _, _) = toy_lm.train([adamw(**kwargs), optax.adamw(**kwargs)], params, loss, 100)
    assert losses[-1] < 0.5 * losses[0]  # it actually trained
    assert toy_lm.max_abs_diff(ours, ref) < 1e-6


def eager_steps(opt, params, steps):
    """A few un-jitted steps on a quadratic: grads = params."""
    state = opt.init(params)
    for _ in range(steps):
        updates, state = opt.update(params, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_prefix_mask_matches_optax(problem):
    params, _ = problem
    # A bool at an inner node covers its whole subtree.
    prefix = {"embed": True, "block": False, "lm_head": True}
    ours, _ = eager_steps(adamw(1e-2, weight_decay=0.5, mask=prefix), params, 3)
    ref, _ = eager_steps(optax.adamw(1e-2, weight_decay=0.5, mask=prefix), params, 3)
    assert toy_lm.max_abs_diff(ours, ref) < 1e-6


def test_masked_leaves_get_no_decay():
    params = {"w": jnp.ones((2, 2)), "norm": {"scale": jnp.ones((2,))}}
    opt = adamw(0.1, weight_decay=1.0, mask=weight_decay_mask)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = opt.update(zero, opt.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_array_equal(updates["norm"]["scale"], 0.0)


def test_state_structure_count_and_mu_dtype(problem):
    params, _ = problem
    opt = adamw(1e-3, mu_dtype=jnp.bfloat16)
    state = opt.init(params)
    assert isinstance(state, AdamWState)
    assert state.count.dtype == jnp.int32 and int(state.count) == 0
    assert jax.tree.structure(state.mu) == jax.tree.structure(params)
    assert all(m.dtype == jnp.bfloat16 for m in jax.tree.leaves(state.mu))
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(state.nu))
    _, state = eager_steps(opt, params, 3)
    assert int(state.count) == 3
    assert all(m.dtype == jnp.bfloat16 for m in jax.tree.leaves(state.mu))


def test_update_is_jittable():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros((2,))}
    opt = adamw(cosine_schedule(1e-2, 10, 2), weight_decay=0.1, mask=weight_decay_mask)
    state = opt.init(params)
    eager, _ = opt.update(params, state, params)
    jitted, new_state = jax.jit(opt.update)(params, state, params)
    assert toy_lm.max_abs_diff(eager, jitted) < 1e-7
    assert int(new_state.count) == 1


def test_weight_decay_requires_params():
    params = {"w": jnp.ones((2, 2))}
    opt = adamw(1e-3, weight_decay=0.1)
    with pytest.raises(ValueError, match="params"):
        opt.update(params, opt.init(params))
