"""Rollouts: G sampled responses per prompt from our inference engine (lm.inference's on-device loop).

    out = rollout(params, config, prompt_ids, group_size=8, sampling=SamplingConfig(temperature=1.0,
                  max_new_tokens=16, stop_ids=(eot,), seed=step))
    out["responses"][i]    # token ids of sample i (prompt i // G), ending with eot if the model stopped

Each distinct prompt is prefilled once: the n prompts run through the model as one batch, then
every prompt's KV cache (and last-token logits) is copied into its G sample rows and the n * G
rows decode together. The samples are the ones prefilling the n * G repeated prompts gives under
the same seed (`share_prefill=False` runs that path), at 1/G of the prefill work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from lm.inference import SamplingConfig, generate_ids
from lm.inference.engine import Engine, EngineConfig
from lm.inference.generate import decode, start
from lm.inference.request import Request
from lm.model import ModelConfig


def sample_groups(params, config: ModelConfig, prompts: Sequence[Sequence[int]], group_size: int,
                  sampling: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """`generate_ids` of every prompt repeated group_size times (rows grouped by prompt), prefilling each
    prompt once: (tokens int32 [n * G, max generated] with PAD after each row's end, lengths [n * G])."""
    state = start(params, config, prompts, sampling, group_size=group_size)
    state = decode(params, config, state, sampling)
    out, lengths = jax.device_get((state.out, state.lengths))
    return out[:, : max(int(lengths.max()), 0)], lengths


def rollout(params, config: ModelConfig, prompts: Sequence[Sequence[int]], group_size: int,
            sampling: SamplingConfig, share_prefill: bool = True) -> dict:
    """Sample `group_size` responses per prompt in one batch, laid out group by group.

    Returns {"prompts": [n * G] id lists, "responses": [n * G] id lists, "stopped": bool [n * G]}.
    The engine drops the stop token from its output; it is put back on responses that
    ended with it, so that training also teaches the model when to stop. That needs
    exactly one stop id (otherwise which one ended a row is unknown). `share_prefill=False`
    prefills every repeated prompt separately (the same samples, G times the prefill work).
    """
    if len(sampling.stop_ids) != 1:
        raise ValueError(f"rollouts need exactly one stop id (the task's end token), got {sampling.stop_ids}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    repeated = [list(p) for p in prompts for _ in range(group_size)]
    if share_prefill:
        tokens, lengths = sample_groups(params, config, prompts, group_size, sampling)
    else:
        tokens, lengths = generate_ids(params, config, repeated, sampling)
    n_max = min(sampling.max_new_tokens, config.context_length)
    responses, stopped = [], np.zeros(len(repeated), bool)
    for i, p in enumerate(repeated):
        limit = min(n_max, config.context_length - len(p) + 1)  # the engine's own per-row budget
        r = tokens[i, : lengths[i]].tolist()
        if lengths[i] < limit:  # ended before its budget: it sampled the stop token
            r.append(sampling.stop_ids[0])
            stopped[i] = True
        responses.append(r)
    return {"prompts": repeated, "responses": responses, "stopped": stopped}


def engine_rollout(params, config: ModelConfig, prompts: Sequence[Sequence[int]], group_size: int,
                   sampling: SamplingConfig, engine: EngineConfig | None = None) -> dict:
    """`rollout` through the continuous-batching engine (lm.inference.engine) with prefix sharing: the G
    samples of a prompt read the pages its first sample prefilled (every whole page of the prompt except the
    one holding its last token, whose logits each sample needs), and each row leaves the batch as soon as it
    ends, so short responses do not wait for long ones.

    Same return as `rollout` ({"prompts", "responses", "stopped"}, group by group, the stop id put back on
    responses that ended with it) plus "engine_stats" (the engine's counters: prefill_tokens, shared_tokens,
    ...). Sample j of prompt i draws with seed hash((sampling.seed, i, j)) folded per token, so it is
    reproducible but not the same sample `rollout` draws. `engine` defaults to one slot per sample (at most
    64) and pages of 16 tokens.
    """
    if len(sampling.stop_ids) != 1:
        raise ValueError(f"rollouts need exactly one stop id (the task's end token), got {sampling.stop_ids}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    repeated = [list(p) for p in prompts for _ in range(group_size)]
    if engine is None:
        engine = EngineConfig(slots=max(1, min(len(repeated), 64)), prefill_rows=max(1, min(len(prompts), 8)))
    if not engine.prefix_sharing:
        raise ValueError("engine_rollout shares each prompt's pages between its samples; keep "
                         "EngineConfig.prefix_sharing=True")
    eng = Engine(params, config, engine, stop_ids=())
    requests = []
    for i, p in enumerate(repeated):
        seed = int(np.random.SeedSequence([sampling.seed, i // group_size, i % group_size]).generate_state(1)[0])
        requests.append(Request(p, dataclasses.replace(sampling, seed=seed & 0x7FFFFFFF)))
    eng.generate(requests)
    responses, stopped = [], np.zeros(len(repeated), bool)
    for i, r in enumerate(requests):
        stopped[i] = r.finish_reason == "stop"
        responses.append(list(r.tokens) + ([sampling.stop_ids[0]] if stopped[i] else []))
    return {"prompts": repeated, "responses": responses, "stopped": stopped, "engine_stats": dict(eng.stats)}
