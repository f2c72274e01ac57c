"""The cached forward pass against the model's full forward pass, at every position."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.inference.cache import extend_jit as extend
from lm.inference.cache import init_cache, rewind
from tests.inference.tiny import VARIANTS, model
from tests.inference.tiny import full_forward as forward

TOL = 1e-5


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_logits_equal_full_forward_at_every_position(name):
    """Three rows (9, 3 and 6 prompt tokens) left-padded into one cache: a one-pass prefill, then
    single-token decode steps. Every logit equals the full forward pass of that row on its own
    (right padding cannot change a causal model's logits at real positions)."""
    params, c = model(name)
    lengths, width, more = [9, 3, 6], 9, 14
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, c.vocab_size, n + more) for n in lengths]
    ref_in = np.zeros((3, width + more), np.int32)
    for r, s in enumerate(seqs):
        ref_in[r, : len(s)] = s
    ref = np.asarray(forward(params, jnp.asarray(ref_in), config=c))

    tokens, pos, valid = (np.zeros((3, width), t) for t in (np.int32, np.int32, bool))
    for r, n in enumerate(lengths):
        tokens[r, width - n:], pos[r, width - n:], valid[r, width - n:] = seqs[r][:n], np.arange(n), True
    logits, cache = extend(params, c, init_cache(c, 3, width + more), jnp.asarray(tokens), jnp.asarray(pos),
                           jnp.asarray(valid), fresh=True)
    for r, n in enumerate(lengths):
        np.testing.assert_allclose(logits[r, width - n:], ref[r, :n], atol=TOL, rtol=0, err_msg=f"prefill row {r}")
    for j in range(more):
        nxt = jnp.asarray([[s[n + j]] for s, n in zip(seqs, lengths)], jnp.int32)
        logits, cache = extend(params, c, cache, nxt, jnp.asarray([[n + j] for n in lengths], jnp.int32))
        want = np.stack([ref[r, n + j] for r, n in enumerate(lengths)])
        np.testing.assert_allclose(logits[:, 0], want, atol=TOL, rtol=0, err_msg=f"decode step {j}")
    assert int(cache.length) == width + more


def test_multi_token_extend_and_rewind():
    """Verification-style chunks on a non-empty cache, and rolling back rejected tokens."""
    params, c = model("gqa-window")
    tokens = jax.random.randint(jax.random.PRNGKey(2), (1, 20), 0, c.vocab_size)
    full = np.asarray(forward(params, tokens, config=c))
    pos = jnp.arange(20, dtype=jnp.int32)[None]
    _, cache = extend(params, c, init_cache(c, 1, 24), tokens[:, :6], pos[:, :6], fresh=True)
    _, cache = extend(params, c, cache, jnp.full((1, 5), 3, jnp.int32), pos[:, 6:11])  # 5 rejected proposals
    logits, cache = extend(params, c, rewind(cache, 6), tokens[:, 6:11], pos[:, 6:11])
    np.testing.assert_allclose(logits[0], full[0, 6:11], atol=TOL, rtol=0)
    logits, cache = extend(params, c, cache, tokens[:, 11:16], pos[:, 11:16])
    np.testing.assert_allclose(logits[0], full[0, 11:16], atol=TOL, rtol=0)
    assert cache.k.shape == (c.n_layers, 1, c.kv_heads, 24, c.head_dim) == cache.v.shape
    assert int(cache.length) == 16 and bool(jnp.all(cache.k[:, :, :, 16:] == 0))


def test_a_model_trained_with_the_pallas_kernel_decodes_through_the_cache():
    """attention_impl='pallas' (flash attention in training) still decodes: the cache path uses XLA
    attention over its slots, and its logits equal the pallas model's own full forward pass."""
    params, c = model("gqa-window", attention_impl="pallas")
    tokens = jax.random.randint(jax.random.PRNGKey(3), (1, 12), 0, c.vocab_size)
    full = np.asarray(forward(params, tokens, config=c))
    pos = jnp.arange(12, dtype=jnp.int32)[None]
    logits, cache = extend(params, c, init_cache(c, 1, 16), tokens[:, :8], pos[:, :8], fresh=True)
    np.testing.assert_allclose(logits[0], full[0, :8], atol=1e-4, rtol=0)
    logits, _ = extend(params, c, cache, tokens[:, 8:12], pos[:, 8:12])
    np.testing.assert_allclose(logits[0], full[0, 8:12], atol=1e-4, rtol=0)
