"""Prefill-once rollouts give the samples of the repeated-prompt path under the same seed."""

import numpy as np

from lm.align.rollout import rollout
from lm.inference import SamplingConfig
from tests.align import tiny


def test_prefill_once_matches_repeated_prompts():
    params = tiny.params()
    # Different lengths (left padding), one past the 16-token prompt bucket, and a row that stops early.
    prompts = [[10, 11, 12], [20, 21], list(range(30, 47))]
    sampling = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=8, stop_ids=(256,), seed=5)
    shared = rollout(params, tiny.CONFIG, prompts, 4, sampling)
    repeated = rollout(params, tiny.CONFIG, prompts, 4, sampling, share_prefill=False)
    assert shared["prompts"] == repeated["prompts"] == [p for p in prompts for _ in range(4)]
    assert shared["responses"] == repeated["responses"]
    np.testing.assert_array_equal(shared["stopped"], repeated["stopped"])
    assert len({tuple(r) for r in shared["responses"][:4]}) > 1  # the G rows of a prompt are separate samples
    assert shared["stopped"].any() and not shared["stopped"].all()
