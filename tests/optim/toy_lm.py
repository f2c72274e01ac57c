"""A tiny residual-MLP language model as nested dicts, shared by optimizer tests."""

import jax
import jax.numpy as jnp
import optax

VOCAB, DIM, HIDDEN, BATCH, SEQ = 32, 16, 24, 4, 8


def init_params(key):
    """embed [V, D], norm scale [D], w1 [D, H], b1 [H], w2 [H, D], lm_head kernel [D, V]."""
    k = jax.random.split(key, 4)
    return {
        "embed": {"embedding": jax.random.normal(k[0], (VOCAB, DIM)) * 0.5},
        "block": {
            "norm": {"scale": jnp.ones((DIM,))},
            "mlp": {
                "w1": jax.random.normal(k[1], (DIM, HIDDEN)) / DIM**0.5,
                "b1": jnp.zeros((HIDDEN,)),
                "w2": jax.random.normal(k[2], (HIDDEN, DIM)) / HIDDEN**0.5,
            },
        },
        "lm_head": {"kernel": jax.random.normal(k[3], (DIM, VOCAB)) / DIM**0.5},
    }


def make_tokens(key):
    """[BATCH, SEQ] runs of consecutive ids, so next-token loss can fall."""
    start = jax.random.randint(key, (BATCH, 1), 0, VOCAB)
    return (start + jnp.arange(SEQ)[None]) % VOCAB


def loss_fn(params, tokens):
    """Mean next-token cross-entropy on tokens [batch, seq]."""
    x = params["embed"]["embedding"][tokens[:, :-1]]
    block = params["block"]
    h = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * block["norm"]["scale"]
    h = jax.nn.gelu(h @ block["mlp"]["w1"] + block["mlp"]["b1"]) @ block["mlp"]["w2"]
    logits = (x + h) @ params["lm_head"]["kernel"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], -1))


def train(optimizers, params, loss, steps):
    """Run each optimizer for ``steps`` full-batch steps in one jitted scan.

    ``loss`` is params -> scalar. Returns a list of (final params, final state,
    losses [steps]). One compile for all optimizers keeps the tests fast.
    """

    def run_one(opt):
        def body(carry, _):
            p, s = carry
            value, grads = jax.value_and_grad(loss)(p)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), value

        (p, s), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
        return p, s, losses

    return jax.jit(lambda: [run_one(opt) for opt in optimizers])()


def max_abs_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
