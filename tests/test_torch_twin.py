"""The PyTorch twin in benchmarks/ computes the same function as lm.model and trains the same way.

The speed benchmark and the TinyStories end-to-end comparison both rest on this.
"""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch twin needs torch (pip install -e '.[dev]')")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.torch_model import TorchTransformer, cosine_lr, load_params, make_optimizer  # noqa: E402
from lm.model import forward, get_preset, init  # noqa: E402
from lm.optim import OptimizerConfig, learning_rate_at  # noqa: E402
from lm.train import TrainConfig  # noqa: E402
from lm.train.step import init_state, train_step  # noqa: E402

CONFIG = get_preset("tiny", vocab_size=101, context_length=24, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                    d_ff=48)


def test_same_logits():
    params = init(CONFIG, jax.random.PRNGKey(0))
    model = TorchTransformer(CONFIG)
    load_params(model, params)
    tokens = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (3, 24))
    ours = np.asarray(forward(params, jnp.asarray(tokens), CONFIG))
    with torch.no_grad():
        theirs = model(torch.from_numpy(tokens)).numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)


def test_same_training_steps():
    """Three AdamW steps with warmup, clipping and the weight-decay mask land on the same weights."""
    optim = OptimizerConfig(lr=1e-2, warmup_steps=2, grad_clip=0.5, weight_decay=0.1)
    config = TrainConfig(model=CONFIG, optim=optim, steps=10, batch_size=4)
    state = init_state(config, jax.random.PRNGKey(1))
    step_fn = jax.jit(functools.partial(train_step, config=config))  # one compile, not three eager backward passes
    model = TorchTransformer(CONFIG)
    load_params(model, state["params"])
    opt = make_optimizer(model, optim.lr, optim.b1, optim.b2, optim.eps, optim.weight_decay)
    rng = np.random.default_rng(1)
    for step in range(3):
        batch = rng.integers(0, CONFIG.vocab_size, (4, 25)).astype(np.int32)
        state, metrics = step_fn(state, jnp.asarray(batch))
        x = torch.from_numpy(batch).long()
        lr = cosine_lr(step, optim.lr, config.steps, optim.warmup_steps, optim.min_lr_ratio)
        assert lr == pytest.approx(float(learning_rate_at(optim, config.steps, step)), rel=1e-6)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).reshape(-1, CONFIG.vocab_size), x[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
        opt.step()
        assert loss.item() == pytest.approx(float(metrics["loss"]), rel=1e-5)
    mirror = TorchTransformer(CONFIG)
    load_params(mirror, state["params"])
    for (name, a), b in zip(model.state_dict().items(), mirror.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-4, atol=2e-5, err_msg=name)
