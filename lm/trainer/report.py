"""What a pretraining run will cost before it runs: its train step compiled for its mesh from shapes
alone (`lm.train.report` explains the numbers; `format_report` prints them).

    print(format_report(plan_report(TrainConfig(model=get_preset("gpt2-small"), batch_size=8))))
"""

from __future__ import annotations

import time

import jax
import numpy as np

from lm.parallel.sharding import batch_sharding
from lm.train.config import TrainConfig
from lm.train.report import memory_analysis, xla_flops_per_token
from lm.trainer.pretrain import pretrain_plan


def plan_report(config: TrainConfig, devices=None, *, xla_flops: bool = True) -> dict:
    """Compile `config`'s train step for its mesh without allocating arrays; return the report as a dict.

    Keys: strategy, devices, params, flops_per_token (config), xla_flops_per_token (None when not
    asked for), flops_ratio, memory (bytes per device: argument, output, temp, alias,
    peak_estimate), device_memory (bytes, or None when the device does not say), lower_s, compile_s.
    Raises ValueError when the config cannot shard on the devices (the plan says why).
    """
    plan = pretrain_plan(config, None if devices is None else tuple(devices))
    key = jax.ShapeDtypeStruct((2,), np.uint32)
    state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                         jax.eval_shape(plan.init, key), plan.state_shardings)
    batch = jax.ShapeDtypeStruct((config.batch_size, config.model.context_length + 1), np.int32,
                                 sharding=batch_sharding(plan.mesh))
    t0 = time.perf_counter()
    lowered = plan.train_step.lower(state, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    mine = config.model.flops_per_token()
    theirs = xla_flops_per_token(config) if xla_flops else None
    device = plan.mesh.devices.flat[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return {
        "strategy": plan.description,
        "devices": plan.mesh.size,
        "device_kind": device.device_kind,
        "params": config.model.num_params(),
        "tokens_per_step": config.tokens_per_step,
        "flops_per_token": mine,
        "xla_flops_per_token": theirs,
        "flops_ratio": None if theirs is None else theirs / mine,
        "memory": memory_analysis(compiled),
        "device_memory": (stats or {}).get("bytes_limit"),
        "lower_s": t1 - t0,
        "compile_s": t2 - t1,
    }
