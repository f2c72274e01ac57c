import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.align.config import DPOConfig
from lm.align.data import tokenize_pairs
from lm.align.dpo import dpo_batch_loss, dpo_train_step
from lm.align.logprobs import sequence_logprobs
from lm.align.sft import init_train_state
from lm.align.step import accumulate
from lm.optim import OptimizerConfig
from lm.train import TrainConfig
from tests.align import tiny

PROMPTS = [[10, 11, 12], [20, 21], [30, 31, 32, 33], [40]]
CHOSEN = [[50, 51, 256], [52, 256], [53, 54, 55, 256], [56, 256]]
REJECTED = [[60, 256], [61, 62, 63, 256], [64, 256], [65, 66, 256]]


def batch(params):
    width = 8
    c = {k: jnp.asarray(v) for k, v in tokenize_pairs(PROMPTS, CHOSEN, 32, pad_to=width).items()}
    r = {k: jnp.asarray(v) for k, v in tokenize_pairs(PROMPTS, REJECTED, 32, pad_to=width).items()}
    return {"chosen": c, "rejected": r, "ref_chosen": sequence_logprobs(params, tiny.CONFIG, c),
            "ref_rejected": sequence_logprobs(params, tiny.CONFIG, r)}


def test_dpo_training_prefers_chosen():
    params = tiny.params()
    b = batch(params)
    cfg = DPOConfig(beta=0.5, train=TrainConfig(steps=15, batch_size=4, optim=OptimizerConfig(
        lr=1e-2, warmup_steps=0, schedule="constant", weight_decay=0.0)))
    tc = cfg.train_config(tiny.CONFIG)
    state = init_train_state(params, tc)
    step = jax.jit(functools.partial(dpo_train_step, config=tc, beta=cfg.beta))
    losses = []
    for _ in range(15):
        state, m = step(state, b)
        losses.append(float(m["loss"]))
    assert losses[0] == pytest.approx(np.log(2), abs=1e-5)  # policy == reference at the start
    assert losses[-1] < 0.2
    assert float(m["reward_accuracy"]) == 1.0 and float(m["reward_margin"]) > 0
    pc = sequence_logprobs(state["params"], tiny.CONFIG, b["chosen"])
    pr = sequence_logprobs(state["params"], tiny.CONFIG, b["rejected"])
    assert np.all(np.asarray(pc - b["ref_chosen"]) > np.asarray(pr - b["ref_rejected"]))


def test_dpo_microbatches_match_full_batch():
    params = tiny.params()
    b = batch(params)
    tc = DPOConfig(train=TrainConfig(batch_size=4, grad_accum=2)).train_config(tiny.CONFIG)
    # perturb the reference so the loss is not at its symmetric point
    b = dict(b, ref_chosen=b["ref_chosen"] - 1.0)
    full = jax.jit(lambda p, bb: accumulate(lambda p, bb: dpo_batch_loss(p, bb, tc, 0.1), p, bb, 1))(params, b)
    halves = lambda p, bb: (lambda loss, m: (loss / 2, m))(*dpo_batch_loss(p, bb, tc, 0.1))  # noqa: E731
    half = jax.jit(lambda p, bb: accumulate(halves, p, bb, 2))(params, b)
    np.testing.assert_allclose(full[0], half[0], rtol=1e-6)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-7), full[2], half[2])


def test_dpo_config_validation():
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0)
