"""Stale and asynchronous rollouts (GRPOConfig.max_staleness, async_rollouts) against a plain reference loop.

The reference is written here from the public pieces (`collect`, `build_batch`, and the same compiled
train step, `fine_tune_plan`'s), without the driver, the snapshot queue or threads: step t samples
with P[max(t - k, 0)], the parameters at the start of that step, whose log-probs are the ratio's
denominator. (A plain `jax.jit` of grpo_train_step compiles to a program whose float32 results
differ from the plan's in the last bits, so the reference shares the plan's step.)
"""

import functools

import jax
import numpy as np
import pytest

from lm.align.config import GRPOConfig
from lm.align.grpo import grpo_train_step
from lm.align.grpo_loop import build_batch, collect, train_grpo
from lm.optim import OptimizerConfig
from lm.train import TrainConfig
from lm.trainer import RunOptions, fine_tune_plan
from tests.align import tiny
from tests.align.test_grpo import LowBytesTask
from tests.align.test_grpo_options import stoppy_params

PROBLEMS = [{"question": f"q{i}", "answer": "0"} for i in range(16)]
TASK = LowBytesTask("low-bytes", prompt_template="{question}")


def config(steps: int, staleness: int = 0, async_rollouts: bool = False, save_every: int = 50) -> GRPOConfig:
    optim = OptimizerConfig(lr=1e-2, warmup_steps=0, schedule="constant", weight_decay=0.0)
    train = TrainConfig(steps=steps, batch_size=16, eval_every=0, log_every=1, save_every=save_every, optim=optim,
                        seed=7, async_checkpoints=False)
    return GRPOConfig(prompts_per_step=4, group_size=4, max_new_tokens=6, train=train, max_staleness=staleness,
                      async_rollouts=async_rollouts)


@functools.lru_cache(maxsize=4)
def reference(cfg: GRPOConfig):
    """(params after each step, [rewards of each step]) of the plain loop; one optimizer step per rollout
    step over the whole rollout batch, its rows in the loop's documented order (seed, step, epoch)."""
    assert cfg.epochs == 1 and cfg.train.batch_size == cfg.rollout_size
    params = stoppy_params()
    tc = cfg.train_config(tiny.CONFIG)
    plan = fine_tune_plan(functools.partial(grpo_train_step, config=cfg, train_config=tc), tc, params)
    state = plan.init(params)
    starts, rewards = [], []
    kw = dict(model=tiny.CONFIG, tokenizer=tiny.tokenizer(), task=TASK, problems=PROBLEMS, config=cfg)
    for t in range(cfg.train.steps):
        starts.append(jax.tree.map(np.array, state.params))
        behaviour = starts[max(t - cfg.max_staleness, 0)]
        rows, stats = collect(behaviour, t, **kw)
        batch, _ = build_batch(behaviour, params, tiny.CONFIG, cfg, rows, rows["rewards"])
        order = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(cfg.train.seed), t),
                                                  cfg.rollout_size))
        state, _ = plan.train_step(state, plan.put_batch(jax.tree.map(lambda x: np.asarray(x)[order], batch)))
        rewards.append(stats["reward"])
    return starts[1:] + [jax.tree.map(np.array, state.params)], rewards


def run(cfg: GRPOConfig, run_dir=None, **options):
    return train_grpo(stoppy_params(), tiny.CONFIG, tiny.tokenizer(), TASK, PROBLEMS, cfg, run_dir,
                      options=RunOptions(progress=False, **options))


def _equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _rewards(result) -> list[float]:
    return [h["reward"] for h in result.history if "loss" in h]


def test_staleness_zero_is_the_synchronous_loop_bitwise():
    cfg = config(10)
    want, want_rewards = reference(cfg)
    got = run(cfg)
    assert _rewards(got) == want_rewards
    assert _equal(got.state.params, want[-1])


def test_staleness_one_in_a_thread_samples_with_the_previous_policy():
    cfg = config(4, staleness=1, async_rollouts=True)
    want, want_rewards = reference(cfg)
    threaded = run(cfg)
    assert _rewards(threaded) == want_rewards  # the thread's timing changes nothing
    assert _equal(threaded.state.params, want[-1])
    on_policy, _ = reference(config(10))
    assert not _equal(want[-1], on_policy[3])  # sampling one step behind trains to other parameters
    # From step 2 on, rollouts come from the parameters before the last update: the ratio is off 1.
    ratios = [h["ratio"] for h in threaded.history if "loss" in h]
    assert ratios[0] == pytest.approx(1.0, abs=1e-5) and all(abs(r - 1) > 1e-5 for r in ratios[2:])


@pytest.mark.slow  # three more runs with checkpoints (~1 min on a busy 2-core machine)
def test_staleness_two_resumes_exactly_with_its_behaviour_snapshots(tmp_path):
    cfg = config(5, staleness=2, save_every=1)  # without the thread (the default tests use it)
    straight = run(cfg, tmp_path / "straight")
    run(cfg, tmp_path / "split", stop_after=3)
    resumed = run(cfg, tmp_path / "split", resume=True)
    assert resumed.resumed_from == 3
    assert [(h["step"], h["reward"], h["loss"]) for h in resumed.history if "loss" in h] == \
        [(h["step"], h["reward"], h["loss"]) for h in straight.history if "loss" in h]
    assert _equal((straight.state.params, straight.state.opt_state), (resumed.state.params, resumed.state.opt_state))
    want, _ = reference(cfg)
    assert _equal(straight.state.params, want[-1])
