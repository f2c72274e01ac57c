"""GPipe pipeline parallelism of the pretraining step: layers split into stages over the `pipe` mesh axis.

The model stores its blocks stacked, `params["blocks"]` leaves shaped
[n_layers, ...], and the rules table shards their "layers" axis over `pipe`,
so stage s holds only layers s*L/S .. (s+1)*L/S - 1 and their optimizer state.
Each step splits the (per data shard) batch into M microbatches and runs
M + S - 1 ticks; at every tick each stage scans its layers over what it holds
and passes the result to the next stage with `ppermute`. Autodiff of this
loop is the GPipe schedule: all forwards, then all backwards in reverse, with
the S - 1 tick bubble at each end. Stage 0 embeds, the last stage computes the
loss; the other stages compute those too (masked out), which costs energy, not
time, since they would otherwise wait. Packed documents travel with their
microbatch: each stage reads the segment ids of the microbatch it holds.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from lm.model import bind
from lm.model.documents import document_positions
from lm.train.config import TrainConfig
from lm.train.step import apply_gradients, documents, head_loss

BLOCKS = "blocks"


def check_pipeline(config: TrainConfig, stages: int, microbatches: int, data: int) -> None:
    c = config.model
    if c.n_layers % stages:
        raise ValueError(f"n_layers={c.n_layers} does not split into {stages} pipeline stages; "
                         "choose --parallel.pipe dividing n_layers")
    if config.batch_size % (data * microbatches):
        raise ValueError(f"batch_size={config.batch_size} must divide into data={data} shards of "
                         f"microbatches={microbatches} equal microbatches; change --batch-size or "
                         "--parallel.microbatches")
    if c.n_experts:
        raise ValueError("pipeline parallelism does not support MoE models (the load-balancing loss is "
                         "per batch, not per microbatch); use data/fsdp/tensor axes")
    if config.grad_accum != 1:
        raise ValueError("pipeline microbatches replace grad_accum: set --grad-accum 1 and --parallel.microbatches")


def _vary(x, axes):
    return jax.lax.pcast(x, axes, to="varying") if axes else x


def _stage_loss(params, tokens, config: TrainConfig, stages: int, microbatches: int, data_axis: str | None):
    """Per-device body: loss and metrics of this data shard, from the last stage.

    params["blocks"] leaves: this stage's [L/S, ...]; tokens: int32 [batch / data, seq + 1].
    """
    c = config.model
    per_stage = c.n_layers // stages
    # Mark every parameter as differing per device here, before the loop: autodiff then sums each
    # gradient over its replicas once, after the backward loop, rather than at every tick.
    data = () if data_axis is None else (data_axis,)
    params = {k: jax.tree.map(functools.partial(_vary, axes=data if k == BLOCKS else ("pipe", *data)), v)
              for k, v in params.items()}
    # This stage's layers are a model of per_stage layers: its blocks are the local [L/S, ...] shards.
    model = bind(params, dataclasses.replace(c, n_layers=per_stage))
    stage = jax.lax.axis_index("pipe")
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    b, t = inputs.shape
    micro = inputs.reshape(microbatches, b // microbatches, t)
    segments, loss_mask = documents(inputs, config)
    micro_segments = None if segments is None else segments.reshape(micro.shape)
    index_positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), micro.shape[1:])

    def tick(carry, i):
        incoming, outputs = carry
        # Stage s holds microbatch i - s at tick i (clipped at the ends, where its output is discarded).
        mine = jnp.clip(i - stage, 0, microbatches - 1)
        seg = None if micro_segments is None else micro_segments[mine]
        positions = index_positions if seg is None else document_positions(seg)
        x = jnp.where(stage == 0, model.embed_tokens(micro[mine], positions), incoming)

        def layer(block, x, _):
            return block(x, positions, None, seg, True)[0], None

        x, _ = model.scan(layer, x)
        done = i - (stages - 1)  # the microbatch the last stage has just finished
        slot = jnp.clip(done, 0, microbatches - 1)
        keep = (stage == stages - 1) & (done >= 0)
        outputs = outputs.at[slot].set(jnp.where(keep, x, outputs[slot]))
        passed = jax.lax.ppermute(x, "pipe", [(s, (s + 1) % stages) for s in range(stages)])
        return (passed, outputs), None

    act = jnp.zeros((*micro.shape[1:], c.d_model), jnp.dtype(c.dtype))
    init = jax.tree.map(functools.partial(_vary, axes=("pipe", *data)),  # differs per stage and data shard
                        (act, jnp.zeros((microbatches, *act.shape), act.dtype)))
    (_, outputs), _ = jax.lax.scan(tick, init, jnp.arange(microbatches + stages - 1))
    hidden = model.final_hidden(outputs.reshape(b, t, c.d_model))
    loss, metrics = head_loss(model, hidden, targets, config, config.z_loss, loss_mask)
    last = stage == stages - 1
    out = {k: jax.lax.psum(jnp.where(last, v, 0.0), "pipe") for k, v in dict(metrics, loss=loss).items()}
    if data_axis is not None:
        out = {k: (jax.lax.psum(v, data_axis) if k == "num_tokens" else jax.lax.pmean(v, data_axis))
               for k, v in out.items()}
    return out


def pipeline_loss(params, batch, config: TrainConfig, mesh: Mesh, microbatches: int):
    """(loss, metrics) of a global batch [batch, seq + 1] through the GPipe schedule."""
    stages = mesh.shape["pipe"]
    data_axis = "data" if mesh.shape.get("data", 1) > 1 else None
    param_specs = {k: (jax.tree.map(lambda _: PartitionSpec("pipe"), v) if k == BLOCKS
                       else jax.tree.map(lambda _: PartitionSpec(), v)) for k, v in params.items()}
    body = functools.partial(_stage_loss, config=config, stages=stages, microbatches=microbatches,
                             data_axis=data_axis)
    out = jax.shard_map(body, mesh=mesh, in_specs=(param_specs, PartitionSpec(data_axis)),
                        out_specs=PartitionSpec(), check_vma=True)(params, batch)
    loss = out.pop("loss")
    return loss, out


def pipeline_train_step(state, batch: jax.Array, config: TrainConfig, mesh: Mesh, microbatches: int):
    """One optimizer step with pipelined forward and backward; the update is `apply_gradients`."""
    grad_fn = jax.value_and_grad(pipeline_loss, has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, batch, config, mesh, microbatches)
    return apply_gradients(state, grads, loss, metrics, config)
