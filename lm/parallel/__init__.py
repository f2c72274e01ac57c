"""Training on a device mesh: data, fully sharded, tensor and pipeline parallelism, multi-host.

    from lm.trainer import pretrain_plan
    plan = pretrain_plan(TrainConfig(parallel=ParallelConfig(fsdp=-1)))     # or lm.parallel.make_plan(init_fn,
    state = plan.init(key); state, metrics = plan.train_step(state, plan.put_batch(batch))  # step_fn, eval_fn, ...)

`rules.py` is the one table that maps the model's logical axis names to mesh
axes; `mesh.py` builds the mesh; `sharding.py` derives NamedShardings for
params, optimizer state and batches; `plan.py` jits any step with them;
`ddp.py` and `zero1.py` are shard_map versions with explicit collectives
(for any step's gradients; GPipe, which needs the model's layers, is
`lm.train.pipeline`); `distributed.py` starts multi-process runs. Nothing here
imports `lm.train`: the steps come in as functions.
"""

from lm.parallel.config import AXES, MODES, ParallelConfig
from lm.parallel.distributed import initialize_distributed
from lm.parallel.mesh import make_mesh, mesh_sizes
from lm.parallel.plan import Plan, make_plan
from lm.parallel.rules import ACTIVATION_RULES, PARAM_RULES, strategy_name
from lm.parallel.sharding import activation_sharding, state_shardings

__all__ = ["ACTIVATION_RULES", "AXES", "MODES", "PARAM_RULES", "ParallelConfig", "Plan", "activation_sharding",
           "initialize_distributed", "make_mesh", "make_plan", "mesh_sizes", "state_shardings", "strategy_name"]
