"""What a run will cost before it runs: compile the train step ahead of time, allocate nothing.

    report = plan_report(TrainConfig(model=get_preset("gpt2-small"), batch_size=8))   # lm.trainer.report
    print(format_report(report))
    python -m experiments.pretrain --preset 1b --batch-size 8 --dry-run

The step is compiled for the config's mesh from `ShapeDtypeStruct`s (no arrays), and the report
gives the parameter count, training FLOPs per token from the config (what MFU in the training log
uses) and as XLA counts them, and XLA's memory analysis per device: arguments (params, optimizer
state, batch), outputs and temporaries. A shape or sharding error shows up here, on a CPU, before a
GPU is rented.

XLA's FLOP count. Its cost analysis counts a loop body once, whatever the trip count, so the count
is taken from a second lowering of the same step with the layers unrolled, the loss over full
logits (the fused loss is a loop over chunks), one microbatch, plain XLA attention (a kernel is
opaque to the count, and blocked attention skips work the config's formula includes) and no remat
(recomputation is real work but not model FLOPs). Only that program is lowered, never compiled.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from lm.train.config import TrainConfig
from lm.train.step import init_state, train_step

GIB = 1024**3


def _flops_config(config: TrainConfig) -> TrainConfig:
    """The same model and batch, shaped so that XLA's cost analysis sees every FLOP exactly once."""
    from lm.parallel.config import ParallelConfig

    model = dataclasses.replace(config.model, scan_layers=False, remat="none", attention_impl="xla")
    return dataclasses.replace(config, model=model, loss_chunk=0, grad_accum=1,
                               batch_size=config.batch_size // config.grad_accum, parallel=ParallelConfig())


def xla_flops_per_token(config: TrainConfig) -> float:
    """Training FLOPs per token of one step as XLA counts them (see the module docstring)."""
    c = _flops_config(config)
    key = jax.ShapeDtypeStruct((2,), np.uint32)
    state = jax.eval_shape(functools.partial(init_state, c), key)
    batch = jax.ShapeDtypeStruct((c.batch_size, c.model.context_length + 1), np.int32)
    lowered = jax.jit(functools.partial(train_step, config=c)).lower(state, batch)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / c.tokens_per_step


def memory_analysis(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {name: int(getattr(m, f"{name}_size_in_bytes", 0)) for name in ("argument", "output", "temp", "alias")}
    # Outputs that alias donated arguments (the new train state) need no memory of their own.
    out["peak_estimate"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def format_report(r: dict) -> str:
    """The report as the text `--dry-run` prints."""
    def gib(n):
        return f"{n / GIB:,.2f} GiB"

    lines = [f"strategy: {r['strategy']} ({r['devices']} x {r['device_kind']})",
             f"parameters: {r['params']:,}",
             f"FLOPs per token (config, used for MFU): {r['flops_per_token']:,}"]
    if r["xla_flops_per_token"] is not None:
        lines.append(f"FLOPs per token (XLA cost analysis): {r['xla_flops_per_token']:,.0f} "
                     f"({r['flops_ratio']:.3f}x the config's)")
    lines.append(f"FLOPs per step: {r['flops_per_token'] * r['tokens_per_step']:.3e} "
                 f"({r['tokens_per_step']:,} tokens)")
    m = r["memory"]
    if m:
        lines.append(f"memory per device: arguments {gib(m['argument'])}, outputs {gib(m['output'])} "
                     f"({gib(m['alias'])} aliased to donated arguments), temporaries {gib(m['temp'])}; "
                     f"peak about {gib(m['peak_estimate'])}")
        if r["device_memory"]:
            fits = m["peak_estimate"] <= r["device_memory"]
            lines.append(f"device memory {gib(r['device_memory'])}: "
                         + ("fits" if fits else "DOES NOT FIT: lower the batch, set --model.remat full, or shard "
                                                "with --parallel.fsdp"))
    lines.append(f"lowered in {r['lower_s']:.1f} s, compiled in {r['compile_s']:.1f} s")
    return "\n".join(lines)
