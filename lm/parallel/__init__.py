"""Training on a device mesh: data, fully sharded, tensor and pipeline parallelism, multi-host.

    from lm.parallel import ParallelConfig, make_plan
    plan = make_plan(TrainConfig(parallel=ParallelConfig(fsdp=-1)))
    state = plan.init(key); state, metrics = plan.train_step(state, plan.put_batch(batch))

`rules.py` is the one table that maps the model's logical axis names to mesh
axes; `mesh.py` builds the mesh; `sharding.py` derives NamedShardings for
params, optimizer state and batches; `plan.py` jits the steps with them;
`pipeline.py`, `ddp.py` and `zero1.py` are the shard_map versions with
explicit collectives; `distributed.py` starts multi-process runs.
"""

from lm.parallel.config import AXES, MODES, ParallelConfig
from lm.parallel.mesh import make_mesh, mesh_sizes
from lm.parallel.rules import ACTIVATION_RULES, PARAM_RULES, strategy_name

_LAZY = {  # these import lm.train, which imports this package's config: load them on first use
    "Plan": "lm.parallel.plan", "make_plan": "lm.parallel.plan",
    "state_shardings": "lm.parallel.sharding", "activation_sharding": "lm.parallel.sharding",
    "initialize_distributed": "lm.parallel.distributed", "is_main_process": "lm.parallel.distributed",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lm.parallel' has no attribute {name!r}")


__all__ = ["ACTIVATION_RULES", "AXES", "MODES", "PARAM_RULES", "ParallelConfig", "make_mesh", "mesh_sizes",
           "strategy_name", *_LAZY]
