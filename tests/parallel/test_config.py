"""lm.parallel pieces that need no extra devices: configs, the rules table, layouts, the model hook."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from experiments.pretrain import parse_config
from lm.model import forward, get_preset, init, logical_axes
from lm.model.sharding import constrain, sharding_rules
from lm.parallel import ParallelConfig
from lm.parallel.distributed import distributed_settings
from lm.parallel.rules import ACTIVATION_RULES, PARAM_RULES, check_model, param_specs, spec
from lm.parallel.sharding import mirror_param_shardings
from lm.parallel.zero1 import WHOLE, shard_dims
from lm.train import TrainConfig
from lm.trainer import pretrain_plan as make_plan

TINY = dataclasses.replace(get_preset("tiny"), vocab_size=64, context_length=8, d_model=32, n_layers=2, n_heads=4,
                           n_kv_heads=2, d_ff=64)
SIZES = {"data": 2, "fsdp": 4, "tensor": 2, "pipe": 1}


def test_default_is_the_single_device_path():
    config = TrainConfig(model=TINY)
    assert not config.parallel.enabled
    plan = make_plan(config)
    # Nothing parallel is a one-device mesh: the same code path, no `mesh is None` branch.
    assert plan.mesh.size == 1 and plan.train_step is make_plan(config).train_step  # compiled once per config
    batch = np.zeros((2, 9), np.int32)
    np.testing.assert_array_equal(plan.put_batch(batch), batch)
    assert plan.rows == (0, 1) and plan.description == "single device"


def test_flags_reach_the_parallel_config():
    c = parse_config(["--parallel.fsdp", "-1", "--parallel.tensor", "2", "--parallel.mode", "jit",
                      "--coordinator-address", "host0:1234", "--num-processes", "2", "--process-id", "1"])
    assert c.parallel == ParallelConfig(fsdp=-1, tensor=2) and c.train_config().parallel == c.parallel
    assert (c.coordinator_address, c.num_processes, c.process_id) == ("host0:1234", 2, 1)


def test_axis_sizes_and_bad_meshes():
    assert ParallelConfig(data=-1, tensor=2).axis_sizes(8) == {"data": 4, "fsdp": 1, "tensor": 2, "pipe": 1}
    assert ParallelConfig(fsdp=2).axis_sizes(8)["fsdp"] == 2  # a divisor: the first 2 devices
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        ParallelConfig(tensor=3).axis_sizes(8)
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        ParallelConfig(data=-1, tensor=3).axis_sizes(8)
    with pytest.raises(ValueError, match="does not divide the 1 devices"):
        make_plan(TrainConfig(model=TINY, parallel=ParallelConfig(data=2)))
    for bad in (dict(data=0), dict(tensor=-2), dict(data=-1, pipe=-1), dict(mode="pmap")):
        with pytest.raises(ValueError, match="ParallelConfig|at most one"):
            ParallelConfig(**bad)
    with pytest.raises(ValueError, match="explicit data parallelism"):
        ParallelConfig(data=4, tensor=2, mode="ddp")


def test_rules_map_logical_names_to_mesh_axes():
    assert spec(("embed", "mlp"), PARAM_RULES, SIZES) == P("fsdp", "tensor")
    assert spec(("heads", "head_dim", "embed"), PARAM_RULES, SIZES) == P("tensor", None, "fsdp")
    assert spec(("embed", "mlp"), PARAM_RULES, {"data": 8}) == P()  # pure DP: replicated
    assert spec(("batch", "seq", "embed"), ACTIVATION_RULES, SIZES) == P(("data", "fsdp"))
    assert spec(("batch", "seq", "heads", "head_dim"), ACTIVATION_RULES, {"data": 4, "tensor": 2}) == \
        P("data", None, "tensor")
    with pytest.raises(ValueError, match="no rule"):
        spec(("nonsense",), PARAM_RULES, SIZES)


def test_every_parameter_gets_a_checked_spec():
    abstract = jax.eval_shape(functools.partial(init, TINY), jax.random.PRNGKey(0))
    specs = param_specs(logical_axes(TINY), abstract, SIZES)
    assert jax.tree.structure(specs, is_leaf=lambda x: isinstance(x, P)) == jax.tree.structure(abstract)
    assert specs["blocks"]["attn"]["wk"] == P(None, "fsdp", "tensor")
    with pytest.raises(ValueError, match=r"\['wk'\]: its 'kv_heads' dimension has size 2 \(n_kv_heads\)"):
        param_specs(logical_axes(TINY), abstract, {"tensor": 8})
    check_model(TINY, SIZES)
    with pytest.raises(ValueError, match="d_ff=66 is not divisible by the tensor axis"):
        check_model(dataclasses.replace(TINY, n_kv_heads=4, d_ff=66), {"tensor": 4})
    with pytest.raises(ValueError, match="d_model=32 is not divisible by the fsdp axis"):
        check_model(TINY, {"fsdp": 64})


def test_optimizer_state_shardings_follow_the_params_by_structure():
    params = {"a": {"w": np.zeros((4, 2), np.float32)}, "b": np.zeros(3, np.float32)}
    names = {"a": {"w": "sharding of a.w"}, "b": "sharding of b"}
    state = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)).init(params)
    out = mirror_param_shardings(state, params, names, "replicated")
    adam = out[1][0]
    assert adam.mu == adam.nu == names and adam.count == "replicated"


def test_stacked_layers_split_over_pipe_only():
    """Every block leaf leads with the "layers" axis, which only the pipe axis splits."""
    abstract = jax.eval_shape(functools.partial(init, TINY), jax.random.PRNGKey(0))
    assert abstract["blocks"]["attn"]["wq"].shape == (2, 32, 4, 8)
    logical = logical_axes(TINY)
    is_spec = lambda x: isinstance(x, P)  # noqa: E731
    assert all(s[0] == "layers" for s in jax.tree.leaves(logical["blocks"], is_leaf=is_spec))
    pp = param_specs(logical, abstract, {"data": 4, "pipe": 2})
    assert {s for s in jax.tree.leaves(pp["blocks"], is_leaf=is_spec)} == {P("pipe")}
    other = jax.tree.leaves(param_specs(logical, abstract, SIZES)["blocks"], is_leaf=is_spec)  # fsdp x tensor
    assert all(len(s) == 0 or s[0] is None for s in other) and any(len(s) for s in other)


def test_zero1_splits_each_leaf_on_its_first_divisible_dimension():
    params = {"w": jax.ShapeDtypeStruct((3, 8), jnp.float32), "b": jax.ShapeDtypeStruct((5,), jnp.float32)}
    assert shard_dims(params, 4) == {"w": 1, "b": WHOLE}


def test_model_constraints_are_a_no_op_without_rules():
    x = jnp.ones((2, 3, 4))
    assert constrain(x, ("batch", "seq", "embed")) is x
    seen = []

    def record(names, shape):
        seen.append((names, len(shape)))
        return jax.sharding.SingleDeviceSharding(jax.devices()[0])

    params = jax.eval_shape(functools.partial(init, TINY), jax.random.PRNGKey(0))
    tokens = jax.ShapeDtypeStruct((2, 8), jnp.int32)
    with sharding_rules(record):
        jax.eval_shape(functools.partial(forward, config=TINY), params, tokens)
    assert all(len(names) == ndim for names, ndim in seen)
    assert {names for names, _ in seen} == {("batch", "seq", "embed"), ("batch", "seq", "heads", "head_dim"),
                                            ("batch", "seq", "kv_heads", "head_dim"), ("batch", "seq", "mlp")}
    seen.clear()
    jax.eval_shape(functools.partial(forward, config=TINY), params, tokens)
    assert not seen  # outside the context the resolver is never consulted


def test_distributed_settings_from_flags_then_environment():
    assert distributed_settings(environ={}) is None
    assert distributed_settings("h:1", 2, 1, environ={}) == {"coordinator_address": "h:1", "num_processes": 2,
                                                             "process_id": 1}
    env = {"JAX_COORDINATOR_ADDRESS": "h:2", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed_settings(environ=env) == {"coordinator_address": "h:2", "num_processes": 4, "process_id": 3}
    assert distributed_settings(process_id=0, environ=env)["process_id"] == 0  # a flag beats the environment
    # An address alone leaves the rest to JAX's cluster detection (SLURM, Open MPI, ...).
    assert distributed_settings("h:3", environ={}) == {"coordinator_address": "h:3", "num_processes": None,
                                                       "process_id": None}
    with pytest.raises(ValueError, match="out of range"):
        distributed_settings("h:1", 2, 2, environ={})
