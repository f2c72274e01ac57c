"""Rollouts: G sampled responses per prompt from our inference engine (lm.inference's on-device loop).

    out = rollout(params, config, prompt_ids, group_size=8, sampling=SamplingConfig(temperature=1.0,
                  max_new_tokens=16, stop_ids=(eot,), seed=step))
    out["responses"][i]    # token ids of sample i (prompt i // G), ending with eot if the model stopped
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lm.inference import SamplingConfig, generate_ids
from lm.model import ModelConfig


def rollout(params, config: ModelConfig, prompts: Sequence[Sequence[int]], group_size: int,
            sampling: SamplingConfig) -> dict:
    """Sample `group_size` responses per prompt in one batch, laid out group by group.

    Returns {"prompts": [n * G] id lists, "responses": [n * G] id lists, "stopped": bool [n * G]}.
    The engine drops the stop token from its output; it is put back on responses that
    ended with it, so that training also teaches the model when to stop. That needs
    exactly one stop id (otherwise which one ended a row is unknown).
    """
    if len(sampling.stop_ids) != 1:
        raise ValueError(f"rollouts need exactly one stop id (the task's end token), got {sampling.stop_ids}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    repeated = [list(p) for p in prompts for _ in range(group_size)]
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
