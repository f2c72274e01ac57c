"""Scenarios run on 8 virtual CPU devices (see devices.py); each writes a JSON report.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.parallel.worker strategies out.json

The reports hold raw measurements; the assertions live in the test files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys

import jax
import numpy as np

from lm.data import batch_at
from lm.model import get_preset
from lm.optim import OptimizerConfig
from lm.parallel import ParallelConfig
from lm.parallel.sharding import bytes_per_device
from lm.train import TrainConfig, TrainState
from lm.train.step import init_state, make_optimizer
from lm.trainer import pretrain_plan as make_plan

# Small enough to compile quickly; 2 layers so that 2 pipeline stages each hold one; 4 heads and
# 2 kv heads so that a tensor axis of 2 splits both.
MODEL = dataclasses.replace(get_preset("tiny"), vocab_size=128, context_length=8, d_model=32, n_layers=2,
                            n_heads=4, n_kv_heads=2, d_ff=64)
STEPS = 3
STRATEGIES = {
    "dp": dict(data=8), "fsdp": dict(fsdp=8), "tp": dict(tensor=2), "dp_tp": dict(data=4, tensor=2),
    "fsdp_tp": dict(fsdp=4, tensor=2), "dp_pp": dict(data=4, pipe=2), "ddp": dict(data=8, mode="ddp"),
    "zero1": dict(data=8, mode="zero1"),
}


def config(**parallel) -> TrainConfig:
    # eps 1e-6 rather than 1e-8: entries whose gradient is at float32 noise level would otherwise
    # get Adam's full +-lr step in one run and not the other, hiding real agreement (measured:
    # reordering the same sums on one device then moves isolated entries by up to 4e-4).
    return TrainConfig(model=MODEL, optim=OptimizerConfig(lr=1e-2, warmup_steps=0, eps=1e-6), steps=STEPS,
                       batch_size=16, parallel=ParallelConfig(**parallel))


def tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, MODEL.vocab_size, 4000).astype(np.int32)


def train(plan, state, data):
    history = []
    for step in range(STEPS):
        batch = batch_at(data, step, 16, MODEL.context_length, 0)  # config()'s batch size and seed
        state, metrics = plan.train_step(state, plan.put_batch(batch))
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return state, history


def specs(tree) -> dict:
    return {jax.tree_util.keystr(p): str(x.sharding.spec) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def initial_state(cfg: TrainConfig) -> dict:
    """A train state from NumPy random numbers: jit-compiling the model's threefry init costs more
    CPU time than a whole strategy's train step, and agreement does not depend on where the
    starting point came from (the `init` scenario checks the sharded init itself)."""
    abstract = jax.eval_shape(functools.partial(init_state, cfg), jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)

    def draw(path, s):  # matrices random, norm gains ones; stacked layers have one more axis
        matrix = len(s.shape) - (jax.tree_util.keystr(path).startswith("['blocks']")) > 1
        return (rng.normal(size=s.shape) * 0.2 if matrix else np.ones(s.shape)).astype(s.dtype)

    params = jax.tree_util.tree_map_with_path(draw, abstract["params"])
    opt_state = jax.device_get(make_optimizer(cfg).init(params))
    return TrainState(np.zeros([], np.int32), params, opt_state)


def strategies(names) -> dict:
    """Train each strategy from the same state and batches as one device; report what differs."""
    data = tokens()
    init = initial_state(config())
    ref_state, ref_history = train(make_plan(config()), jax.tree.map(np.copy, init), data)
    ref_params = jax.device_get(ref_state["params"])
    report, finals = {"reference": {"history": ref_history}}, {}
    for name in names:
        plan = make_plan(config(**STRATEGIES[name]))
        state = plan.place(init)
        placed = {"params": specs(state["params"]), "opt_state": specs(state["opt_state"])}
        state, history = train(plan, state, data)
        params = jax.device_get(state["params"])
        report[name] = {"description": plan.description, "history": history, "specs": placed,
                        "max_param_diff": max_diff(params, ref_params)}
        finals[name] = params
    for name in ("ddp", "zero1"):  # the explicit shard_map versions against the compiler's DP
        if name in finals and "dp" in finals:
            report[name]["max_param_diff_vs_dp"] = max_diff(finals[name], finals["dp"])
    return report


def pipeline_muon() -> dict:
    """Muon on GPipe stages (each stage orthogonalises its own layers' matrices) against one device."""
    data = tokens()
    muon = dict(optim=OptimizerConfig(name="muon", lr=1e-2, muon_lr=0.02, warmup_steps=0, eps=1e-6))
    ref_cfg, pp_cfg = (dataclasses.replace(config(**axes), **muon) for axes in ({}, STRATEGIES["dp_pp"]))
    init = initial_state(ref_cfg)
    ref, ref_history = train(make_plan(ref_cfg), jax.tree.map(np.copy, init), data)
    plan = make_plan(pp_cfg)
    got, history = train(plan, plan.place(init), data)
    return {"history": history, "reference": ref_history,
            "max_param_diff": max_diff(jax.device_get(got["params"]), jax.device_get(ref["params"]))}


def memory() -> dict:
    """Bytes of params + optimizer state each device holds, read from the shards, against the whole."""
    init = initial_state(config())
    whole = sum(np.asarray(x).nbytes for x in jax.tree.leaves((init["params"], init["opt_state"])))
    out = {"bytes_total": whole}
    for name in ("dp", "fsdp", "zero1"):
        state = make_plan(config(**STRATEGIES[name])).place(init)
        held = bytes_per_device({"params": state["params"], "opt_state": state["opt_state"]})
        out[name] = {"devices": len(held), "max_bytes": max(held.values()), "min_bytes": min(held.values())}
    return out


def sharded_init() -> dict:
    """plan.init (jit with out_shardings, nothing made on one device first) against lm.train's init."""
    ref = jax.device_get(jax.jit(functools.partial(init_state, config()))(jax.random.PRNGKey(0)))
    out = {}
    for name in ("fsdp_tp", "dp_pp"):
        plan = make_plan(config(**STRATEGIES[name]))
        state = plan.init(jax.random.PRNGKey(0))
        placed = [x.sharding.is_equivalent_to(s, x.ndim)
                  for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(plan.state_shardings))]
        out[name] = {"specs": specs(state["params"]), "max_diff": max_diff(jax.device_get(state), ref),
                     "as_planned": all(placed)}
    return out


def errors() -> dict:
    """The message make_plan raises for each config that cannot shard on 8 devices."""
    cases = {
        "mesh_not_dividing": dict(parallel=dict(data=3)),
        "two_rest_axes": dict(parallel=dict(data=-1, fsdp=-1)),
        "heads_vs_tensor": dict(parallel=dict(data=2, tensor=4), model=dict(n_heads=2, n_kv_heads=2, d_model=32)),
        "kv_heads_vs_tensor": dict(parallel=dict(tensor=4), model=dict(n_heads=4, n_kv_heads=2)),
        "batch_vs_data": dict(parallel=dict(data=8), batch_size=12),
        "layers_vs_pipe": dict(parallel=dict(data=2, pipe=4), model=dict(n_layers=2)),
        "microbatches": dict(parallel=dict(data=2, pipe=2, microbatches=3)),
        "pipe_with_tensor": dict(parallel=dict(tensor=2, pipe=2)),
        "zero1_muon": dict(parallel=dict(data=8, mode="zero1"), optim=dict(name="muon")),
    }
    out = {}
    for name, case in cases.items():
        try:
            c = dataclasses.replace(config(), model=dataclasses.replace(MODEL, **case.get("model", {})),
                                    optim=dataclasses.replace(config().optim, **case.get("optim", {})),
                                    batch_size=case.get("batch_size", 16))
            make_plan(dataclasses.replace(c, parallel=ParallelConfig(**case["parallel"])))
            out[name] = None
        except ValueError as e:
            out[name] = str(e)
    return out


def presets() -> dict:
    """Each GPU preset's train step lowered for a real mesh from shapes alone (a sharding error shows up
    here, without a GPU); the error text where one does not lower."""
    from lm.parallel.sharding import batch_sharding
    from lm.model import get_preset

    meshes = {"gpt2-small": dict(fsdp=8), "d12": dict(data=2, fsdp=2, tensor=2),
              "350m": dict(data=4, pipe=2, microbatches=2), "1b": dict(fsdp=4, tensor=2)}
    out = {}
    for name, axes in meshes.items():
        c = TrainConfig(model=get_preset(name), batch_size=8, parallel=ParallelConfig(**axes))
        try:
            plan = make_plan(c)
            state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                                 jax.eval_shape(plan.init, jax.ShapeDtypeStruct((2,), np.uint32)), plan.state_shardings)
            batch = jax.ShapeDtypeStruct((8, c.model.context_length + 1), np.int32, sharding=batch_sharding(plan.mesh))
            plan.train_step.lower(state, batch)
            out[name] = {"description": plan.description, "error": None}
        except Exception as e:  # reported, asserted in the test
            out[name] = {"description": None, "error": f"{type(e).__name__}: {e}"}
    return out


def fine_tune() -> dict:
    """SFT and GRPO steps through `lm.trainer.fine_tune_plan` on an FSDP x TP mesh against one device."""
    from lm.align.config import GRPOConfig
    from lm.align.data import tokenize_pairs
    from lm.align.grpo import batch_logprobs, grpo_train_step
    from lm.align.policy_gradient import group_advantages
    from lm.align.sft import sft_train_step
    from lm.model.lora import LoRAConfig
    from lm.trainer import fine_tune_plan

    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(1, 100, rng.integers(2, 6))) for _ in range(16)]
    responses = [list(rng.integers(1, 100, rng.integers(1, 4))) for _ in range(16)]
    batch = tokenize_pairs(prompts, responses, MODEL.context_length, pad_to=8)
    params = initial_state(config()).params
    rewards = rng.integers(0, 2, 16).astype(np.float32)
    grpo = GRPOConfig(prompts_per_step=4, group_size=4, max_new_tokens=4,
                      train=dataclasses.replace(config(), model=MODEL))
    old = batch_logprobs(params, batch["input_ids"], batch["labels"], model=MODEL)
    grpo_batch = dict(batch, raw_rewards=rewards, advantages=np.asarray(group_advantages(rewards, 4)[0]),
                      old_log_probs=np.asarray(old))
    kinds = {"sft": (lambda tc: functools.partial(sft_train_step, config=tc), batch, None),
             "grpo": (lambda tc: functools.partial(grpo_train_step, config=grpo, train_config=tc), grpo_batch, None),
             # LoRA: replicated adapters, the frozen base sharded as the full model is
             "sft_lora": (lambda tc: functools.partial(sft_train_step, config=tc), batch,
                          LoRAConfig(rank=4, targets=("attn", "mlp")))}
    out = {}
    for kind, (make_step, b, lora) in kinds.items():
        runs = {}
        for name, axes in {"one_device": {}, "fsdp_tp": dict(fsdp=4, tensor=2)}.items():
            tc = config(**axes)
            plan = fine_tune_plan(make_step(tc), tc, params, lora=lora)
            state, history = plan.init(params), []
            for _ in range(STEPS):
                state, metrics = plan.train_step(state, plan.put_batch(b))
                history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
            runs[name] = {"history": history, "params": jax.device_get(state.params), "description": plan.description,
                          "wq": str((plan.base or state.params)["blocks"]["attn"]["wq"].sharding.spec)}
        ref = runs["one_device"]
        out[kind] = {name: {"history": r["history"], "description": r["description"], "wq_spec": r["wq"],
                            "max_param_diff": max_diff(r["params"], ref["params"])} for name, r in runs.items()}
    return out


QUICK = ("dp", "dp_tp", "fsdp_tp", "dp_pp", "ddp", "zero1")
SCENARIOS = {
    "quick": lambda: {"strategies": strategies(QUICK), "memory": memory(), "errors": errors(), "presets": presets()},
    "fine_tune": lambda: {"fine_tune": fine_tune()},
    "full": lambda: {"strategies": strategies(tuple(STRATEGIES)), "init": sharded_init(),
                     "pipeline_muon": pipeline_muon()},
}


if __name__ == "__main__":
    scenario, path = sys.argv[1], sys.argv[2]
    if jax.device_count() < 8:
        sys.exit(f"needs 8 devices, found {jax.device_count()} (set XLA_FLAGS before jax starts)")
    with open(path, "w") as f:
        json.dump(SCENARIOS[scenario](), f)
