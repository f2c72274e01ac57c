"""The layer-scanned pass over key/value segments gives `forward`'s logits, however the text is cut."""

import jax.numpy as jnp
import numpy as np
import pytest

from lm.inference.segments import run
from tests.inference.tiny import VARIANTS, full_forward, model


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_shared_prefix_then_rows_then_answers_match_a_full_forward(name):
    params, c = model(name)
    rng = np.random.default_rng(0)
    b, p, w, t = 3, 7, 6, 4
    prefix = rng.integers(0, 257, (1, p))
    rest_len = np.array([6, 2, 4])  # each row's rest is left-padded to w columns
    rest = rng.integers(0, 257, (b, w))
    answers = rng.integers(0, 257, (b, t))
    stack = params

    pos = jnp.arange(p)[None]
    _, seg_prefix = run(stack, c, jnp.asarray(prefix), pos, jnp.ones((1, p), bool), logits="none")
    cols = np.arange(w)[None]
    valid = cols >= w - rest_len[:, None]
    rest_pos = p + np.maximum(cols - (w - rest_len[:, None]), 0)
    last, seg_rest = run(stack, c, jnp.asarray(rest), jnp.asarray(rest_pos), jnp.asarray(valid), (seg_prefix,),
                         logits="last")
    ans_pos = (p + rest_len)[:, None] + np.arange(t)[None]
    logits, _ = run(stack, c, jnp.asarray(answers), jnp.asarray(ans_pos), jnp.ones((b, t), bool),
                    (seg_prefix, seg_rest))

    for r in range(b):
        ids = np.concatenate([prefix[0], rest[r, w - rest_len[r]:], answers[r]])
        want = np.asarray(full_forward(params, jnp.asarray(ids[None]), config=c)[0])
        cut = p + rest_len[r]
        np.testing.assert_allclose(last[r], want[cut - 1], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(logits[r], want[cut:], rtol=1e-4, atol=1e-4)


def test_a_segment_holds_every_layers_keys_for_its_own_tokens():
    params, c = model("gqa-window")
    stack = params
    tokens = jnp.arange(5)[None]
    _, seg = run(stack, c, tokens, tokens, jnp.ones((1, 5), bool), logits="none")
    assert seg.k.shape == (c.n_layers, 1, 5, c.kv_heads, c.head_dim) == seg.v.shape
    assert seg.pos.tolist() == [[0, 1, 2, 3, 4]] and bool(seg.valid.all())
