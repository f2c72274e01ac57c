"""Tokenizer worker processes start fresh: they never inherit (by fork) a parent that has JAX's threads."""

import os

import jax.numpy as jnp

from lm.tokenizer.pool import worker_pool


def test_workers_do_not_inherit_the_parents_jax():
    assert float(jnp.ones(2).sum()) == 2.0  # the parent has started JAX's backend (and its threads)
    with worker_pool(1) as pool:
        child_pid, child_has_jax = pool.apply(eval, ("__import__('os').getpid(), 'jax' in __import__('sys').modules",))
    assert child_pid != os.getpid()
    assert child_has_jax is False  # a forked child would hold the parent's modules, jax among them
