"""The loss options through the GRPO loop (`train_grpo` on the tiny model): the logged first-step loss
against a float64 NumPy recomputation from the same rollout rows, and dynamic sampling's counts."""

import dataclasses
import functools

import numpy as np
import pytest

from lm.align.config import GRPOConfig
from lm.align.dynamic_sampling import uniform_groups
from lm.align.grpo_loop import collect, sample_round, train_grpo
from lm.align.policy_gradient import PGLossConfig
from lm.align.tasks import Task
from lm.optim import OptimizerConfig
from lm.train import TrainConfig
from lm.trainer import RunOptions
from tests.align import tiny

MAX_NEW = 6
PROBLEMS = [{"question": f"q{i}", "answer": "0"} for i in range(16)]


@dataclasses.dataclass(frozen=True)
class LengthTask(Task):
    """Reward: the completion's length in characters (so advantages correlate with response length)."""

    def score(self, completion, problem):
        return float(len(completion))


@dataclasses.dataclass(frozen=True)
class RareTask(Task):
    """Reward 1 when the completion starts with a byte below 24: rare, so most groups of 4 are all zero."""

    def score(self, completion, problem):
        return float(bool(completion) and ord(completion[0]) < 24)


@functools.lru_cache(maxsize=1)
def stoppy_params():
    """The tiny model with its end-token logit scaled up, so responses stop at varied lengths (and some
    are cut by the length limit)."""
    p = tiny.params()
    head = p["head"]["kernel"].copy()
    head[:, 256] *= 30.0
    return {**p, "head": {"kernel": head}}


def _config(loss: PGLossConfig, steps: int = 1) -> GRPOConfig:
    optim = OptimizerConfig(lr=1e-2, warmup_steps=0, schedule="constant", weight_decay=0.0)
    return GRPOConfig(prompts_per_step=4, group_size=4, max_new_tokens=MAX_NEW, loss=loss,
                      train=TrainConfig(steps=steps, batch_size=16, eval_every=0, log_every=1, optim=optim, seed=3))


def _run(task, config):
    result = train_grpo(stoppy_params(), tiny.CONFIG, tiny.tokenizer(), task, PROBLEMS, config,
                        options=RunOptions(progress=False))
    return [h for h in result.history if "loss" in h]


def _kw(task, config):
    return dict(model=tiny.CONFIG, tokenizer=tiny.tokenizer(), task=task, problems=PROBLEMS, config=config)


def _expected_first_loss(rows: dict, loss: PGLossConfig) -> float:
    """On-policy clipped surrogate of the first step in float64: every response token carries -A_i."""
    scores = np.asarray(rows["scores"], np.float64)
    n = np.array([len(r) for r in rows["responses"]], np.float64)
    rewards = scores.copy()
    if loss.truncation == "penalty":  # DAPO's ramp, written out: free to MAX - cache, then down to -1 at MAX
        cache = loss.overlong_cache
        rewards += np.where(n <= MAX_NEW - cache, 0.0, np.where(n <= MAX_NEW, (MAX_NEW - cache - n) / cache, -1.0))
    g = rewards.reshape(-1, 4)
    adv = g - g.mean(1, keepdims=True)
    if loss.normalize_std:
        adv = adv / (g.std(1, ddof=1, keepdims=True) + 1e-6)
    adv = adv.reshape(-1)
    keep = np.asarray(rows["stopped"], bool) if loss.truncation == "mask" else np.ones_like(n, bool)
    n = np.where(keep, n, 0.0)
    if loss.length_norm == "token":
        return float(np.sum(-adv * n) / n.sum())
    return float(np.mean(np.where(n > 0, -adv, 0.0)))  # sequence: each row's token mean, then over all rows


@pytest.mark.parametrize("loss", [PGLossConfig(), PGLossConfig(truncation="mask"), PGLossConfig(truncation="penalty")],
                         ids=["token", "mask", "penalty"])
def test_first_step_loss_matches_numpy(loss):
    task = LengthTask("length", prompt_template="{question}")
    config = _config(loss)
    rows, _ = collect(stoppy_params(), 0, **_kw(task, config))
    stopped = np.asarray(rows["stopped"])
    assert 0 < stopped.sum() < len(stopped)  # a mix of stopped and truncated rows, of several lengths
    want = _expected_first_loss(rows, loss)
    got = _run(task, config)[0]
    assert got["loss"] == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert got["reward"] == pytest.approx(float(np.mean(rows["scores"])), rel=1e-6)
    if loss.length_norm == "token" and loss.truncation == "none":
        assert abs(want) > 0.05  # the token default weighs long (here: rewarded) answers more ...
        seq = _expected_first_loss(rows, dataclasses.replace(loss, length_norm="sequence"))
        assert seq == pytest.approx(0.0, abs=1e-9)  # ... where sequence means cancel within each group
    if loss.truncation == "mask":  # the truncated rows' tokens left the loss: it differs from unmasked
        assert want != pytest.approx(_expected_first_loss(rows, PGLossConfig()), abs=1e-3)
    if loss.truncation == "penalty":
        assert got["reward_shaped"] < got["reward"]


def test_dynamic_sampling_drops_uniform_groups_and_logs_them():
    task = RareTask("rare", prompt_template="{question}")
    config = _config(PGLossConfig(dynamic_sampling=True, max_sampling_tries=3), steps=2)
    history = _run(task, config)
    assert len(history) == 2
    # Recount step 0 independently: rounds of 4 fresh groups each, until 4 differing groups or 3 rounds.
    kept = dropped = tries = 0
    drawn, sampled = [], 0
    while kept < 4 and tries < 3:
        rows = sample_round(stoppy_params(), 0, tries, **_kw(task, config))
        uniform = uniform_groups(rows["rewards"], 4)
        drawn.append(tuple(map(tuple, rows["prompts"][::4])))
        sampled += sum(len(r) for r in rows["responses"])
        kept, dropped, tries = kept + int((~uniform).sum()), dropped + int(uniform.sum()), tries + 1
    h = history[0]
    assert (h["tries"], h["groups_dropped"], h["groups_short"]) == (tries, dropped, max(4 - kept, 0))
    assert h["sampled_tokens"] == sampled  # dropped rounds count in the generation budget
    assert dropped > 0 and tries > 1 and len(set(drawn)) == tries  # every round drew other prompts
    assert h["reward"] == pytest.approx(float(np.mean(sample_round(stoppy_params(), 0, 0, **_kw(task, config))
                                                      ["scores"])))
    assert h["reward_kept"] >= h["reward"]  # kept groups have at least one rewarded answer each


def test_engine_backend_trains_on_its_own_rollouts(monkeypatch):
    """rollout_backend="engine": the loop trains on the engine's groups (prefix-shared pages), dynamic
    sampling included, and its logged counts are those of the engine's samples."""
    import lm.align.grpo_loop as grpo_loop

    calls = []
    real = grpo_loop.engine_rollout

    def spy(*args, **kw):
        calls.append(real(*args, **kw))
        return dict(calls[-1])

    monkeypatch.setattr(grpo_loop, "engine_rollout", spy)
    task = RareTask("rare", prompt_template="Solve the problem: {question}")  # one whole 16-token page
    config = dataclasses.replace(_config(PGLossConfig(dynamic_sampling=True, max_sampling_tries=2), steps=1),
                                 rollout_backend="engine")
    history = _run(task, config)
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert len(calls) == history[0]["tries"]
    assert history[0]["sampled_tokens"] == sum(len(r) for c in calls for r in c["responses"])
    # Every prompt's first 16-token page is the template's ("Solve the problem: q"): the 15 rows after the
    # first read it instead of prefilling it again.
    assert calls[0]["engine_stats"].get("shared_tokens", 0) == 15 * 16
    with pytest.raises(ValueError, match="rollout_backend"):
        dataclasses.replace(config, rollout_backend="vllm")
