"""FLOP accounting: 6ND and the exact per-token count, side by side."""

import dataclasses

import pytest

from lm.model import ModelConfig, get_preset
from lm.scaling.flops import count_flops, flops_6nd, scaling_params, tokens_for_budget, tokens_for_budget_exact


def test_6nd_and_its_inverse():
    assert flops_6nd(70e9, 1.4e12) == pytest.approx(5.88e23)  # Chinchilla: 70B params, 1.4T tokens
    assert tokens_for_budget(5.88e23, 70e9) == pytest.approx(1.4e12)
    with pytest.raises(ValueError, match="positive"):
        flops_6nd(0, 1e9)
    with pytest.raises(ValueError, match="positive"):
        tokens_for_budget(1e20, -1)


def test_exact_count_by_hand():
    # d=64, 2 layers, 4 heads, SwiGLU d_ff=192, vocab 512, context 32, untied head.
    m = ModelConfig(vocab_size=512, context_length=32, d_model=64, n_layers=2, n_heads=4, d_ff=192)
    attn = 4 * 64 * 64  # q, k, v, o
    mlp = 3 * 64 * 192
    matmul = 2 * (attn + mlp) + 512 * 64  # + output head
    attention_scores = 12 * 2 * 32 * 64  # QK^T and AV, forward + backward
    fc = count_flops(m, n_tokens=1000)
    assert fc.flops_per_token == 6 * matmul + attention_scores == m.flops_per_token()
    assert fc.attention_flops_per_token == attention_scores
    assert fc.exact == pytest.approx(1000 * (6 * matmul + attention_scores))
    # N leaves out the input embedding only: layers (with norms), final norm, output head.
    assert fc.n_params == scaling_params(m) == m.num_params() - 512 * 64
    assert fc.approx_6nd == pytest.approx(6 * fc.n_params * 1000)
    assert fc.n_params_total == m.num_params()
    assert "6ND=" in str(fc) and "exact=" in str(fc)


def test_attention_share_grows_with_context():
    m = get_preset("tiny")
    short, long = count_flops(m, 1e6), count_flops(dataclasses.replace(m, context_length=4096), 1e6)
    assert 1 < short.ratio < long.ratio
    assert tokens_for_budget_exact(m, short.exact) == pytest.approx(1e6)
    with pytest.raises(ValueError, match="positive"):
        count_flops(m, 0)
