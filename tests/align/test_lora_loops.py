"""LoRA-only SFT and GRPO through the real loops (`train_sft`, `train_grpo` on `lm.trainer.fit`): the loss
falls, only the adapters train and hold optimizer state, the base stays bitwise as given, the exported
policy is W + (alpha / r) A B (float64 NumPy) and loads back through `lm.inference.load_run`, and a
stopped LoRA run resumes bit for bit."""

import dataclasses
import math
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.align.config import GRPOConfig, SFTConfig
from lm.align.grpo_loop import train_grpo
from lm.align.sft import sft_loss
from lm.align.sft_loop import sft_rows, train_sft
from lm.align.step import loss_weights
from lm.align.tasks import ARITHMETIC, Task, task_problems
from lm.inference import load_run
from lm.model import forward
from lm.model.lora import TARGETS, LoRAConfig, param_count
from lm.optim import OptimizerConfig
from lm.train import TrainConfig
from lm.train.lora import BASE_DIR, load_base
from lm.train.step import make_optimizer
from lm.trainer import RunOptions
from tests.align import tiny

LORA = LoRAConfig(rank=4, alpha=8.0, targets=("q", "v", "mlp"))
TRAIN = TrainConfig(steps=8, batch_size=4, log_every=1, save_every=4, eval_every=0, async_checkpoints=False,
                    optim=OptimizerConfig(lr=3e-2, warmup_steps=0, schedule="constant", weight_decay=0.0))
CONFIG = SFTConfig(train=TRAIN, lora=LORA)


def _problems():
    return task_problems(ARITHMETIC, "train", 8)


def _run(params, run_dir, config=CONFIG, **options):
    return train_sft(params, tiny.CONFIG, tiny.tokenizer(), ARITHMETIC, _problems(), config, run_dir,
                     options=RunOptions(progress=False, **options))


def _losses(history):
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def _numpy_merge(base, adapters, lora):
    """The merged tree in float64 NumPy: W + (alpha / r) A B on each target, reshaped to W."""
    merged = jax.tree.map(lambda x: np.asarray(x, np.float64), base)
    for name, ad in adapters.items():
        node = merged["blocks"]
        *parents, leaf = TARGETS[name]
        for k in parents:
            node = node[k]
        a, b = np.asarray(ad["a"], np.float64), np.asarray(ad["b"], np.float64)
        node[leaf] = node[leaf] + lora.scale * np.einsum("lir,lro->lio", a, b).reshape(node[leaf].shape)
    return merged


def _leaves_by_path(tree):
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    """One 8-step LoRA SFT run (q, v and the MLP, rank 4) with checkpoints at steps 4 and 8."""
    run_dir = tmp_path_factory.mktemp("lora") / "straight"
    params = tiny.params()
    before = jax.tree.map(np.array, params)
    result = _run(params, run_dir)
    return {"result": result, "params": params, "before": before, "run_dir": run_dir}


def _full_data_loss(params):
    rows = sft_rows(tiny.tokenizer(), ARITHMETIC, _problems(), tiny.CONFIG, CONFIG)
    batch = {k: jnp.asarray(v) for k, v in rows.items()}
    batch["weights"] = loss_weights(batch["response_mask"])
    tc = dataclasses.replace(TRAIN, model=tiny.CONFIG)
    return float(jax.jit(lambda p, b: sft_loss(p, b, tc, with_entropy=False)[0])(params, batch))


def test_lora_sft_lowers_the_loss_and_trains_only_the_adapters(sft_run):
    result, before = sft_run["result"], sft_run["before"]
    base_loss, tuned_loss = _full_data_loss(before), _full_data_loss(result.params)
    assert tuned_loss < base_loss - 0.5, (base_loss, tuned_loss)
    adapters = result.state.params
    assert sorted(adapters) == ["q", "v", "w1", "w2", "w3"]
    # layers x rank x (d_in + d_out): q and v map 32 -> 32, w1 and w3 32 -> 64, w2 64 -> 32
    n = param_count(adapters)
    assert n == 2 * 4 * (2 * (32 + 32) + 3 * (32 + 64))
    # The optimizer state is that of the adapters alone: optax's own init of the adapters, nothing of the base.
    reference = make_optimizer(dataclasses.replace(TRAIN, model=tiny.CONFIG)).init(adapters)
    assert jax.tree.structure(result.state.opt_state) == jax.tree.structure(reference)
    assert param_count(result.state.opt_state) == param_count(reference) <= 2 * n + 8
    assert {x.shape for x in jax.tree.leaves(result.state.opt_state) if np.size(x) > 1} <= \
        {x.shape for x in jax.tree.leaves(adapters)}
    assert all(np.abs(np.asarray(ad["b"])).max() > 0 for ad in adapters.values())  # every B has moved off zero
    # The base: the caller's arrays and the copy saved in the run are bitwise what was given.
    for tree in (sft_run["params"], load_base(sft_run["run_dir"], before)):
        for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(before), strict=True):
            np.testing.assert_array_equal(np.asarray(a), b)
    # The exported policy differs from the base on the adapted weights only.
    merged, base = _leaves_by_path(result.params), _leaves_by_path(before)
    adapted = {jax.tree_util.keystr(tuple(jax.tree_util.DictKey(k) for k in ("blocks", *TARGETS[t])))
               for t in adapters}
    assert adapted <= set(merged) and len(adapted) == 5
    for path, x in merged.items():
        assert np.array_equal(x, base[path]) != (path in adapted), path


def test_exported_policy_is_the_merge_and_loads_back(sft_run):
    """result.params and load_run(run) are the base with the trained adapters merged: equal to a float64
    NumPy merge, and their logits agree with the float64 merge's (computed in float32) to 1e-5."""
    result, before = sft_run["result"], sft_run["before"]
    reference = _numpy_merge(before, jax.device_get(result.state.params), LORA)
    for got, want in zip(jax.tree.leaves(result.params), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-6, atol=1e-7)
    loaded, model, _ = load_run(sft_run["run_dir"], tokenizer=False)
    assert model == tiny.CONFIG
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(result.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 257, (2, 20)))
    logits = jax.jit(forward, static_argnums=2)
    ours = np.asarray(logits(loaded, tokens, tiny.CONFIG))
    ref = np.asarray(logits(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), reference), tokens, tiny.CONFIG))
    unadapted = np.asarray(logits(jax.tree.map(jnp.asarray, before), tokens, tiny.CONFIG))
    assert np.abs(ours - unadapted).max() > 1e-2  # the adapters changed the model
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    # An earlier checkpoint loads as its own merge too.
    early, _, _ = load_run(sft_run["run_dir"], step=4, tokenizer=False)
    assert not np.array_equal(np.asarray(early["blocks"]["attn"]["wq"]), np.asarray(loaded["blocks"]["attn"]["wq"]))


def test_lora_sft_resumes_exactly(sft_run, tmp_path):
    """The run as a kill after its step-4 checkpoint leaves it (the last checkpoint gone), resumed."""
    run_dir = tmp_path / "split"
    shutil.copytree(sft_run["run_dir"], run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "8")
    resumed = _run(tiny.params(), run_dir, resume=True)
    straight = sft_run["result"]
    assert resumed.resumed_from == 4 and _losses(resumed.history) == _losses(straight.history)  # bit for bit
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    other = tiny.params(seed=1)
    with pytest.raises(ValueError, match="another base"):  # the adapters only mean something on their base
        _run(other, run_dir, resume=True)
    assert (run_dir / BASE_DIR).is_dir()


class FirstByteTask(Task):
    """Reward 1 when the response starts with a digit: any policy gets some reward right away."""

    def score(self, text: str, problem: dict) -> float:
        return float(bool(text) and text[0].isdigit())


def test_lora_grpo_changes_only_the_adapters():
    task = FirstByteTask("first-digit", prompt_template="{question}")
    problems = [{"question": f"q{i}=", "answer": "0"} for i in range(4)]
    train = TrainConfig(steps=2, batch_size=8, eval_every=0, log_every=1,
                        optim=OptimizerConfig(lr=1e-2, warmup_steps=0, schedule="constant", weight_decay=0.0))
    config = GRPOConfig(prompts_per_step=2, group_size=4, max_new_tokens=4, train=train,
                        lora=LoRAConfig(rank=2, alpha=4.0, targets=("q", "v")))
    params = tiny.params()
    before = jax.tree.map(np.array, params)
    result = train_grpo(params, tiny.CONFIG, tiny.tokenizer(), task, problems, config,
                        options=RunOptions(progress=False))
    history = [h for h in result.history if "reward" in h]
    assert [h["step"] for h in history] == [1, 2] and all(math.isfinite(h["loss"]) for h in history)
    adapters = result.state.params
    assert sorted(adapters) == ["q", "v"] and param_count(adapters) == 2 * 2 * 2 * (32 + 32)
    assert param_count(result.state.opt_state) <= 2 * param_count(adapters) + 8
    assert any(np.abs(np.asarray(ad["b"])).max() > 0 for ad in adapters.values())
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    merged, base = _leaves_by_path(result.params), _leaves_by_path(before)
    changed = {p for p, x in merged.items() if not np.array_equal(x, base[p])}
    assert changed == {"['blocks']['attn']['wq']", "['blocks']['attn']['wv']"}, changed


def test_lora_from_the_command_line():
    from experiments.sft import SFTRun
    from lm.config import add_dataclass_args, dataclass_from_args
    import argparse

    p = argparse.ArgumentParser()
    add_dataclass_args(p, SFTRun)
    assert dataclass_from_args(SFTRun, p.parse_args([])).sft.lora is None
    run = dataclass_from_args(SFTRun, p.parse_args(["--sft.lora.rank", "8", "--sft.lora.targets", "q,v"]))
    assert run.sft.lora == LoRAConfig(rank=8, alpha=16.0, targets=("q", "v"))
    assert dataclass_from_args(SFTRun, p.parse_args(["--sft.lora.targets", "q", "mlp"])).sft.lora.targets == \
        ("q", "mlp")
