"""SFT and DPO resume exactly: a run stopped after a checkpoint (as a kill would leave it) and resumed
gives the losses and parameters of an uninterrupted run, as pretraining does (tests/train/test_loop.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.align.config import DPOConfig, SFTConfig
from lm.align.data import tokenize_pairs
from lm.align.dpo_loop import train_dpo
from lm.align.logprobs import sequence_logprobs
from lm.align.sft_loop import train_sft
from lm.align.tasks import ARITHMETIC, task_problems
from lm.optim import OptimizerConfig
from lm.train import TrainConfig
from lm.trainer import RunOptions
from tests.align import tiny

TRAIN = TrainConfig(steps=6, batch_size=4, log_every=1, save_every=3, eval_every=0, async_checkpoints=False,
                    optim=OptimizerConfig(lr=1e-2, warmup_steps=2, weight_decay=0.0))


def _losses(history):
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def _assert_same(straight, resumed):
    assert resumed.resumed_from == 3 and sorted(_losses(resumed.history)) == list(range(1, 7))
    assert _losses(resumed.history) == _losses(straight.history)  # bit for bit
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sft_resumes_exactly(tmp_path):
    problems = task_problems(ARITHMETIC, "train", 32)
    config = SFTConfig(train=TRAIN)

    def run(name, **options):
        return train_sft(tiny.params(), tiny.CONFIG, tiny.tokenizer(), ARITHMETIC, problems, config, tmp_path / name,
                         options=RunOptions(progress=False, **options))

    straight = run("straight")
    run("split", stop_after=3)
    _assert_same(straight, run("split", resume=True))
    with pytest.raises(ValueError, match="other data"):  # the run's problems are part of its fingerprint
        train_sft(tiny.params(), tiny.CONFIG, tiny.tokenizer(), ARITHMETIC, problems[:-1], config,
                  tmp_path / "split", options=RunOptions(progress=False, resume=True))


def _pairs(params):
    prompts = [[10 + i, 11, 12] for i in range(8)]
    chosen = [[50 + i, 256] for i in range(8)]
    rejected = [[60 + i, 61, 256] for i in range(8)]
    pairs = {k: {n: jnp.asarray(v) for n, v in tokenize_pairs(prompts, side, 32, pad_to=8).items()}
             for k, side in (("chosen", chosen), ("rejected", rejected))}
    pairs["ref_chosen"] = sequence_logprobs(params, tiny.CONFIG, pairs["chosen"])
    pairs["ref_rejected"] = sequence_logprobs(params, tiny.CONFIG, pairs["rejected"])
    return pairs


@pytest.mark.slow  # ~45 s on a busy 2-core machine (three compilations); the SFT test covers the same driver path
def test_dpo_resumes_exactly(tmp_path):
    params = tiny.params()
    data = _pairs(params)
    config = DPOConfig(beta=0.5, train=TRAIN)

    def run(name, **options):
        return train_dpo(tiny.params(), tiny.CONFIG, data, data, config, tmp_path / name,
                         options=RunOptions(progress=False, **options))

    straight = run("straight")
    run("split", stop_after=3)
    resumed = run("split", resume=True)
    _assert_same(straight, resumed)
    assert resumed.final_eval == straight.final_eval and "heldout_reward_accuracy" in resumed.final_eval
