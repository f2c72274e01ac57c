"""Each layer against a float64 NumPy reference, plus causality and parameter accounting."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.model import ModelConfig, attention, bind, forward, get_preset, init, logical_axes
from lm.model import layers as L

jax.config.update("jax_enable_x64", False)
RNG = np.random.default_rng(0)


def r(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_rms(x, w, eps=1e-5):
    x = x.astype(np.float64)
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w


def np_rope(x, pos, theta, layout="half"):
    hd = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = pos[..., None].astype(np.float64) * inv  # [b, s, hd/2]
    c, s = np.cos(ang)[:, :, None], np.sin(ang)[:, :, None]
    if layout == "interleaved":  # CS336 / RoFormer: rotate (x[2i], x[2i+1]) by angle pos * theta^(-2i/d)
        out = np.empty_like(x)
        out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
        out[..., 1::2] = x[..., 1::2] * c + x[..., 0::2] * s
        return out
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)


def np_attention(q, k, v, window=0, softcap=0.0):
    b, t, h, d = q.shape
    g = h // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    s = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d)
    if softcap:
        s = softcap * np.tanh(s / softcap)
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    allowed = (j <= i) & ((i - j < window) if window else True)
    s = np.where(allowed, s, -np.inf)
    return np.einsum("bhts,bshd->bthd", np_softmax(s), v)


def close(a, b, tol=2e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=tol, atol=tol)


def test_softmax_and_norms():
    x = r(3, 5, 16) * 30
    close(L.softmax(jnp.asarray(x)), np_softmax(x.astype(np.float64)))
    w, bias = r(16), r(16)
    close(L.rms_norm(jnp.asarray(x), jnp.asarray(w)), np_rms(x, w), 1e-4)
    x64 = x.astype(np.float64)
    ln = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * w + bias
    close(L.layer_norm(jnp.asarray(x), jnp.asarray(w), jnp.asarray(bias)), ln, 1e-4)


def test_softmax_is_stable_for_huge_inputs():
    out = L.softmax(jnp.array([1e4, 0.0, -1e4]))
    assert np.isfinite(np.asarray(out)).all() and float(out[0]) == pytest.approx(1.0)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_rope(layout):
    x, pos = r(2, 7, 3, 8), np.stack([np.arange(7), np.arange(3, 10)])
    cos, sin = L.rope_angles(jnp.asarray(pos), 8, 10000.0)
    close(L.apply_rope(jnp.asarray(x), cos, sin, layout), np_rope(x.astype(np.float64), pos, 10000.0, layout), 1e-4)


@pytest.mark.parametrize("heads,kv,window", [(4, 4, 0), (4, 2, 0), (4, 1, 3)])
def test_attention_with_gqa_and_window(heads, kv, window):
    q, k, v = r(2, 9, heads, 8), r(2, 9, kv, 8), r(2, 9, kv, 8)
    pos = jnp.broadcast_to(jnp.arange(9), (2, 9))
    out = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), q_positions=pos, k_positions=pos, window=window,
                    impl="xla")
    close(out, np_attention(*(a.astype(np.float64) for a in (q, k, v)), window), 1e-4)


@pytest.mark.parametrize("impl", ["xla", "blocked"])
def test_attention_softcap_and_its_gradient(impl):
    """Scores capped as cap * tanh(s / cap): output against NumPy, the written-out gradient against autodiff."""
    q, k, v = (jnp.asarray(r(2, 70, h, 8) * 3) for h in (4, 2, 2))
    out = attention(q, k, v, softcap=5.0, impl=impl)
    close(out, np_attention(*(np.asarray(a, np.float64) for a in (q, k, v)), softcap=5.0), 1e-4)
    do = jnp.asarray(r(2, 70, 4, 8))

    def loss(q, k, v, fn):
        return jnp.vdot(fn(q, k, v), do)

    ours = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, lambda *a: attention(*a, softcap=5.0, impl=impl))
    plain = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, lambda *a: attention(*a, softcap=5.0, impl="xla",
                                                                              return_lse=True)[0])
    for a, b in zip(ours, plain):
        close(a, np.asarray(b, np.float64), 1e-4)


@pytest.mark.parametrize("t,heads,kv,window", [(150, 4, 2, 0), (130, 2, 1, 70), (64, 2, 2, 0)])
def test_blocked_causal_attention_matches_numpy(t, heads, kv, window):
    """Skipping invisible key blocks changes nothing, at lengths that are not block multiples."""
    q, k, v = r(2, t, heads, 8), r(2, t, kv, 8), r(2, t, kv, 8)
    out = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), window=window, impl="blocked")
    close(out, np_attention(*(a.astype(np.float64) for a in (q, k, v)), window), 1e-4)
    valid = np.ones((2, t), bool)
    valid[1, :5] = False  # a left-padded row
    pos = jnp.broadcast_to(jnp.arange(t), (2, t))
    full = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), q_positions=pos, k_positions=pos, window=window,
                     k_valid=jnp.asarray(valid), impl="xla")
    blocked = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), window=window, k_valid=jnp.asarray(valid),
                        impl="blocked")
    # Padding queries see no keys; their (unused) output differs, so compare real positions only.
    close(np.asarray(blocked)[valid], np.asarray(full, np.float64)[valid], 1e-5)


def np_forward(p, tokens, c: ModelConfig):
    """The whole pre-norm RoPE SwiGLU model in float64 NumPy."""
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    x = P["embed"]["embedding"][tokens]
    pos = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    silu = lambda z: z / (1 + np.exp(-z))  # noqa: E731
    for i in range(c.n_layers):
        b = jax.tree.map(lambda a: a[i], P["blocks"])  # layer i of the stacked layers
        h = np_rms(x, b["attn_norm"]["scale"])
        q = np.einsum("bsd,dhk->bshk", h, b["attn"]["wq"])
        k = np.einsum("bsd,dhk->bshk", h, b["attn"]["wk"])
        if c.qk_norm:  # RMSNorm over each head's q and k, before RoPE
            q, k = np_rms(q, b["attn"]["q_norm"]), np_rms(k, b["attn"]["k_norm"])
        q, k = np_rope(q, pos, c.rope_theta, c.rope_layout), np_rope(k, pos, c.rope_theta, c.rope_layout)
        v = np.einsum("bsd,dhk->bshk", h, b["attn"]["wv"])
        x = x + np.einsum("bshk,hkd->bsd", np_attention(q, k, v), b["attn"]["wo"])
        h = np_rms(x, b["mlp_norm"]["scale"])
        m = b["mlp"]
        x = x + (silu(h @ m["w1"]["kernel"]) * (h @ m["w3"]["kernel"])) @ m["w2"]["kernel"]
    return np_rms(x, P["final_norm"]["scale"]) @ P["head"]["kernel"]


@pytest.mark.parametrize("kw", [{}, {"qk_norm": True, "rope_layout": "interleaved"}])
def test_full_forward_matches_numpy(kw):
    c = get_preset("tiny", vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48, context_length=16,
                   **kw)
    p = init(c, jax.random.PRNGKey(1))
    if c.qk_norm:  # gains other than 1, so the test sees them
        p["blocks"]["attn"]["q_norm"] = 1 + 0.3 * jnp.asarray(r(2, 8))
        p["blocks"]["attn"]["k_norm"] = 1 + 0.3 * jnp.asarray(r(2, 8))
    tokens = RNG.integers(0, 97, (2, 11))
    close(forward(p, jnp.asarray(tokens), c), np_forward(p, tokens, c), 2e-4)


def test_linear_and_embedding_init_statistics():
    lin = L.Linear(256, 512, ("embed", "mlp"), jax.random.PRNGKey(0))
    w = np.asarray(lin.kernel[...])
    std = np.sqrt(2 / (256 + 512))
    assert abs(w.std() - std * 0.987) < 0.03 * std and np.abs(w).max() <= 3 * std + 1e-6  # truncation shrinks std
    x = r(3, 256)
    close(lin(jnp.asarray(x)), x.astype(np.float64) @ w, 1e-4)
    emb = L.Embedding(50, 8, jax.random.PRNGKey(1))
    close(emb(jnp.array([3, 7])), np.asarray(emb.embedding[...])[[3, 7]])


@pytest.mark.parametrize("kw", [{}, {"positions": "learned", "tie_embeddings": True}, {"norm_position": "post"},
                                {"n_experts": 4}, {"sliding_window": 4}])
def test_causality(kw):
    """d loss[t] / d input embedding[t'] is exactly zero for t' > t."""
    c = get_preset("tiny", vocab_size=50, d_model=32, n_layers=2, n_heads=2, d_ff=32, context_length=12, **kw)
    p = init(c, jax.random.PRNGKey(0))
    model_tokens = jnp.arange(10)[None] % 50
    t = 4

    def loss_at_t(emb_table):
        params = dict(p, embed={"embedding": emb_table})
        return forward(params, model_tokens, c)[0, t].sum()

    # Replacing every token after t leaves logits up to t bit-identical.
    other = model_tokens.at[0, t + 1 :].set((model_tokens[0, t + 1 :] + 17) % 50)
    assert (forward(p, model_tokens, c)[0, : t + 1] == forward(p, other, c)[0, : t + 1]).all()
    if not c.tie_embeddings:  # tied heads read every embedding row, so rows are no probe of the input alone
        later = model_tokens[0, t + 1 :]  # ids 5..9 occur only after t
        g = jax.grad(lambda d: forward(dict(p, embed={"embedding": p["embed"]["embedding"].at[later].add(d)}),
                                       model_tokens, c)[0, t].sum())(jnp.zeros((later.shape[0], 32)))
        assert float(jnp.abs(g).max()) == 0.0
    assert float(jnp.abs(jax.grad(loss_at_t)(p["embed"]["embedding"])).max()) > 0


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": True, "positions": "learned"}, {"n_kv_heads": 2},
                                {"n_experts": 3, "experts_per_token": 1}, {"norm": "layernorm", "activation": "relu2"},
                                {"qk_norm": True, "qkv_bias": True}])
def test_num_params_and_axes(kw):
    c = get_preset("tiny", **kw)
    p = init(c, jax.random.PRNGKey(0))
    assert sum(x.size for x in jax.tree.leaves(p)) == c.num_params()
    jax.tree.map(lambda a, spec: (a.ndim == len(spec)) or pytest.fail(f"{a.shape} vs {spec}"), p, logical_axes(c))


def test_flops_per_token_hand_count():
    c = ModelConfig(vocab_size=100, context_length=8, d_model=16, n_layers=2, n_heads=4, d_ff=32)
    per_layer = 4 * 16 * 16 + 3 * 16 * 32
    assert c.flops_per_token() == 6 * (2 * per_layer + 100 * 16) + 12 * 2 * 8 * 16


def test_bf16_compute_is_close_to_float32():
    c = get_preset("tiny", vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_ff=32)
    p = init(c, jax.random.PRNGKey(0))
    tokens = jnp.asarray(RNG.integers(0, 64, (2, 16)))
    f32 = forward(p, tokens, c)
    bf16 = forward(p, tokens, dataclasses.replace(c, dtype="bfloat16"))
    assert bf16.dtype == jnp.float32 and float(jnp.abs(bf16 - f32).max()) < 0.25


def test_config_errors():
    with pytest.raises(ValueError, match="divisible by n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="divisible by n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="activation"):
        ModelConfig(activation="tanh")
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        get_preset("huge")
    with pytest.raises(ValueError, match="fused RMSNorm"):  # the Pallas/Triton kernels are RMSNorm only
        get_preset("tiny", norm="layernorm", norm_impl="pallas")
    with pytest.raises(ValueError, match="remat"):
        ModelConfig(remat="some")
    with pytest.raises(ValueError, match="rope_layout"):
        ModelConfig(rope_layout="rotated")
    with pytest.raises(ValueError, match="cuDNN attention has no score softcap"):
        ModelConfig(attention_impl="cudnn", dtype="bfloat16", logit_softcap=30.0)
    with pytest.raises(ValueError, match="needs dtype='bfloat16'"):
        ModelConfig(attention_impl="cudnn")


def test_bind_exposes_layers():
    c = get_preset("tiny", vocab_size=16, d_model=16, n_layers=1, n_heads=2, d_ff=16)
    model = bind(init(c, jax.random.PRNGKey(0)), c)
    assert model.blocks.attn.wq[...].shape == (1, 16, 2, 8)  # [layers, embed, heads, head_dim]
