"""The plan for fine-tuning existing parameters with any step (SFT, DPO, GRPO) on `config.parallel`'s mesh.

    plan = fine_tune_plan(functools.partial(sft_train_step, config=tc), tc, params)
    state = plan.init(params)                   # a TrainState around params, sharded by the rules table
    state, metrics = plan.train_step(state, plan.put_batch(batch))
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from lm.model import logical_axes
from lm.parallel.mesh import make_mesh, mesh_sizes
from lm.parallel.plan import Plan, make_plan
from lm.parallel.rules import check_model
from lm.train.config import TrainConfig
from lm.train.step import fine_tune_state


def fine_tune_plan(step_fn: Callable, config: TrainConfig, params, eval_fn: Callable | None = None,
                   devices=None) -> Plan:
    """Jit `step_fn(state, batch)` (and `eval_fn(params, batch)`) for the mesh of `config.parallel`
    (one device by default); `params` (arrays or their shapes) fixes the state's shardings."""
    mesh = make_mesh(config.parallel, devices)
    check_model(config.model, mesh_sizes(mesh))
    return make_plan(functools.partial(fine_tune_state, config=config), step_fn, eval_fn,
                     logical=logical_axes(config.model), mesh=mesh, example=(params,),
                     batch_size=config.batch_size, grad_accum=config.grad_accum)
