import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.align.config import GRPOConfig
from lm.align.data import tokenize_pairs
from lm.align.grpo import batch_logprobs, grpo_train_step
from lm.align.grpo_loop import train_grpo
from lm.align.sft_loop import evals
from lm.align.logprobs import masked_sum
from lm.align.policy_gradient import PGLossConfig
from lm.align.rollout import rollout
from lm.align.sft import init_train_state
from lm.align.tasks import Task
from lm.inference import SamplingConfig
from lm.optim import OptimizerConfig
from lm.train import TrainConfig
from lm.trainer import RunOptions
from tests.align import tiny

OPTIM = OptimizerConfig(lr=1e-2, warmup_steps=0, schedule="constant", weight_decay=0.0)


def test_rollout_groups_and_stop_tokens():
    params = tiny.params()
    prompts = [[10, 11, 12], [20, 21]]
    out = rollout(params, tiny.CONFIG, prompts, group_size=4,
                  sampling=SamplingConfig(temperature=1.0, max_new_tokens=6, stop_ids=(256,), seed=3))
    assert out["prompts"] == [prompts[0]] * 4 + [prompts[1]] * 4
    assert len(out["responses"]) == 8
    for r, stopped in zip(out["responses"], out["stopped"]):
        assert 1 <= len(r) <= 7
        assert (r[-1] == 256) == stopped  # the stop token is kept exactly when the row stopped
        assert 256 not in r[:-1]
        if not stopped:
            assert len(r) == 6
    # Samples within a group differ (temperature 1 over 257 tokens).
    assert len({tuple(r) for r in out["responses"][:4]}) > 1
    with pytest.raises(ValueError, match="exactly one stop id"):
        rollout(params, tiny.CONFIG, prompts, 2, SamplingConfig(stop_ids=(1, 2)))


def _synthetic_batch(loss_type):
    """Two prompts, 4 samples each: the rewarded responses are [50, 51], the others [60, 61]."""
    prompts = [[10, 11, 12]] * 4 + [[20, 21]] * 4
    responses = [[50, 51], [60, 61], [50, 51], [60, 61]] * 2
    rewards = np.array([1, 0, 1, 0] * 2, np.float32)
    b = {k: jnp.asarray(v) for k, v in tokenize_pairs(prompts, responses, 32).items()}
    from lm.align.policy_gradient import group_advantages

    adv, _ = group_advantages(jnp.asarray(rewards), 4)
    b.update(raw_rewards=jnp.asarray(rewards), advantages=adv)
    return b, rewards


@pytest.mark.parametrize("loss_type", ["no_baseline", "reinforce_with_baseline", "grpo_clip"])
def test_grpo_step_raises_rewarded_log_probs(loss_type):
    b, rewards = _synthetic_batch(loss_type)
    config = GRPOConfig(prompts_per_step=2, group_size=4, loss=PGLossConfig(loss_type=loss_type), epochs=3,
                        max_new_tokens=4,
                        train=TrainConfig(batch_size=8, optim=OPTIM))
    tc = config.train_config(tiny.CONFIG)
    state = init_train_state(tiny.params(), tc)
    old = batch_logprobs(state["params"], b["input_ids"], b["labels"], model=tiny.CONFIG)
    b["old_log_probs"] = old
    seq = lambda lp: np.asarray(masked_sum(lp, b["response_mask"], axis=-1))  # noqa: E731
    before = seq(old)
    step = jax.jit(functools.partial(grpo_train_step, config=config, train_config=tc))
    for epoch in range(3):  # several epochs over one rollout batch, against the same old policy
        state, m = step(state, b)
        if loss_type == "grpo_clip" and epoch == 0:
            assert float(m["ratio"]) == pytest.approx(1.0, abs=1e-5)  # on-policy first pass
            assert float(m["clip_fraction"]) == 0.0
    after = seq(batch_logprobs(state["params"], b["input_ids"], b["labels"], model=tiny.CONFIG))
    good, bad = rewards == 1, rewards == 0
    assert np.all(after[good] > before[good] + 0.5), (before, after)
    assert np.all(after[bad] < before[bad])
    if loss_type == "grpo_clip":
        assert float(m["clip_fraction"]) > 0  # by the third pass the ratio has left [0.8, 1.2]


@pytest.mark.slow  # a multi-step GRPO run (about 2 min here); the k3 term is unit-tested in test_pg_options
def test_kl_penalty_pulls_back_toward_the_reference():
    b, rewards = _synthetic_batch("grpo_clip")
    params = tiny.params()
    ref = batch_logprobs(params, b["input_ids"], b["labels"], model=tiny.CONFIG)
    b.update(old_log_probs=ref, ref_log_probs=ref)
    moved = {}
    for kl in (0.0, 5.0):
        config = GRPOConfig(prompts_per_step=2, group_size=4, loss=PGLossConfig(kl_coef=kl), max_new_tokens=4,
                            train=TrainConfig(batch_size=8, optim=OPTIM))
        tc = config.train_config(tiny.CONFIG)
        state = init_train_state(params, tc)
        for _ in range(4):
            state, m = grpo_train_step(state, b, config, tc)
            b["old_log_probs"] = batch_logprobs(state["params"], b["input_ids"], b["labels"], model=tiny.CONFIG)
        lp = batch_logprobs(state["params"], b["input_ids"], b["labels"], model=tiny.CONFIG)
        moved[kl] = float(masked_sum(jnp.abs(lp - ref), b["response_mask"]))
        if kl:
            assert float(m["kl_penalty"]) > 0
    assert moved[5.0] < moved[0.0]


@dataclasses.dataclass(frozen=True)
class LowBytesTask(Task):
    """Reward: the share of generated bytes below 64 (digits and punctuation), a signal a random model can climb."""

    def score(self, completion, problem):
        raw = completion.encode("utf-8", "replace")
        return float(np.mean([c < 64 for c in raw])) if raw else 0.0


def test_train_grpo_loop_raises_reward_and_logs():
    task = LowBytesTask("low-bytes", prompt_template="{question}")
    problems = [{"question": f"q{i}", "answer": "0"} for i in range(8)]
    config = GRPOConfig(prompts_per_step=4, group_size=8, epochs=2, max_new_tokens=6,
                        loss=PGLossConfig(length_norm="token", normalize_std=False),
                        train=TrainConfig(steps=6, batch_size=16, eval_every=0, optim=OPTIM, log_every=1))
    result = train_grpo(tiny.params(), tiny.CONFIG, tiny.tokenizer(), task, problems, config,
                        eval_problems=problems[:4], eval_batch_size=4, options=RunOptions(progress=False))
    result = {"history": result.history, "evals": evals(result.history)}
    train = [h for h in result["history"] if "reward" in h]
    assert len(train) == 6 and [h["step"] for h in train] == list(range(1, 7))
    assert train[0]["kl_to_ref"] == pytest.approx(0.0, abs=1e-6)  # the first rollout is the reference itself
    assert train[-1]["kl_to_ref"] > 0
    assert np.mean([h["reward"] for h in train[-2:]]) > train[0]["reward"] + 0.1, [h["reward"] for h in train]
    assert [e["step"] for e in result["evals"]] == [0, 6]
    for key in ("loss", "entropy", "clip_fraction", "response_tokens", "reward_std_within_group"):
        assert np.isfinite(train[-1][key])
    with pytest.raises(ValueError, match="fewer than prompts_per_step"):
        train_grpo(tiny.params(), tiny.CONFIG, tiny.tokenizer(), task, problems[:2], config)


def test_grpo_config_validation():
    with pytest.raises(ValueError, match="must divide the rollout batch"):
        GRPOConfig(prompts_per_step=3, group_size=4, train=TrainConfig(batch_size=8))
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1, train=TrainConfig(batch_size=16))
    with pytest.raises(ValueError, match="loss_type"):
        GRPOConfig(loss=PGLossConfig(loss_type="ppo"))
    with pytest.raises(ValueError, match="preset"):
        GRPOConfig(preset="ppo")
    with pytest.raises(ValueError, match="async_rollouts needs max_staleness >= 1"):
        GRPOConfig(async_rollouts=True)
    with pytest.raises(ValueError, match="max_staleness"):
        GRPOConfig(max_staleness=-1)
    assert GRPOConfig(prompts_per_step=4, group_size=8, epochs=2,
                      train=TrainConfig(steps=10, batch_size=16)).optimizer_steps == 40


def test_loss_presets_and_flags(capsys):
    from experiments.grpo import GRPORun
    from experiments.grpo import main as grpo_main
    from lm.align.policy_gradient import LOSS_PRESETS
    from lm.config import parse_config

    assert GRPOConfig().loss == PGLossConfig() and GRPOConfig().loss.length_norm == "token"
    assert GRPOConfig(preset="dapo").loss == LOSS_PRESETS["dapo"]
    c = GRPOConfig(preset="dapo", loss=PGLossConfig(cliprange_high=0.3))  # an explicit field wins
    assert c.loss == dataclasses.replace(LOSS_PRESETS["dapo"], cliprange_high=0.3)
    assert dataclasses.replace(c, epochs=2).loss == c.loss  # re-validating keeps it
    g = parse_config(GRPORun, ["--init", "x", "--grpo.preset", "gspo", "--grpo.loss.kl_coef", "0.1"]).grpo
    assert g.loss == dataclasses.replace(LOSS_PRESETS["gspo"], kl_coef=0.1)
    g = parse_config(GRPORun, ["--init", "x", "--grpo.loss.length_norm", "sequence"]).grpo
    assert g.loss == PGLossConfig(length_norm="sequence") and g.preset == ""
    for argv, message in [(["--grpo.preset", "dapo", "--grpo.loss.dynamic_sampling", "false"],
                           "--grpo.loss.dynamic_sampling false is PGLossConfig's default, which cannot override"),
                          (["--grpo.length_norm", "token"], "--grpo.length_norm moved to --grpo.loss.length_norm"),
                          (["--grpo.cliprange", "0.1"], "--grpo.cliprange moved to --grpo.loss.cliprange_low")]:
        assert grpo_main(["--init", "x", *argv]) == 2
        assert message in capsys.readouterr().err
