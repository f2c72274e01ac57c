"""`lm.align.rollout.engine_rollout`: GRPO groups generated through the engine with prefix sharing."""

import numpy as np

from lm.align.rollout import engine_rollout
from lm.inference.engine import EngineConfig
from lm.inference.generate import generate_ids
from lm.inference.sampling import SamplingConfig
from tests.inference.tiny import model

PROMPTS = [list(range(3, 13)), list(range(40, 50))]  # 10 tokens: two whole 4-token pages and 2 tokens more
G, PAGE = 3, 4
# test_engine.py's shapes (its programs serve here too); 3 slots for 6 samples: rows join as others finish
ENGINE = EngineConfig(slots=3, page_size=PAGE, prefill_chunk=8, decode_steps=4, bucket_reads=False)


def test_engine_rollout_groups_share_the_prompt_pages_and_match_greedy_decoding():
    params, c = model("gqa-window")
    greedy = SamplingConfig(temperature=0, max_new_tokens=8, stop_ids=(256,))
    out = engine_rollout(params, c, PROMPTS, G, greedy, ENGINE)
    assert out["prompts"] == [p for p in PROMPTS for _ in range(G)]
    ref, n = generate_ids(params, c, PROMPTS, greedy)  # the contiguous-cache decoder, an independent path
    for i, r in enumerate(out["responses"]):
        want = ref[i // G, : n[i // G]].tolist()
        assert r == want + ([256] if out["stopped"][i] else []), i
        assert out["stopped"][i] == (n[i // G] < 8)
    stats = out["engine_stats"]
    # every sample after a prompt's first reads its two whole pages; only the page with the last prompt
    # token (2 tokens, its logits are needed) is prefilled again
    assert stats["shared_tokens"] == len(PROMPTS) * (G - 1) * 2 * PAGE
    assert stats["prefill_tokens"] == len(PROMPTS) * 10 + len(PROMPTS) * (G - 1) * 2


def test_engine_rollout_samples_are_well_formed_groups():
    params, c = model("gqa-window")
    stop = 7
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8, stop_ids=(stop,), seed=3)
    out = engine_rollout(params, c, PROMPTS, G, sampling, ENGINE)
    again = engine_rollout(params, c, PROMPTS, G, sampling, ENGINE)
    assert out["responses"] == again["responses"]  # reproducible from the seed
    assert len(out["responses"]) == len(PROMPTS) * G and out["stopped"].dtype == bool
    for r, s in zip(out["responses"], out["stopped"]):
        assert 1 <= len(r) <= 8 + s and all(0 <= t < c.vocab_size for t in r)
        assert (r[-1] == stop) == s and stop not in r[:-1]
        assert s or len(r) == 8  # a row that did not stop used its whole budget
    for i in range(len(PROMPTS)):  # the G samples of a group are different draws
        group = [tuple(r) for r in out["responses"][i * G: (i + 1) * G]]
        assert len(set(group)) > 1
    other = engine_rollout(params, c, PROMPTS, G, SamplingConfig(temperature=1.0, max_new_tokens=8,
                                                                  stop_ids=(stop,), seed=4), ENGINE)
    assert other["responses"] != out["responses"]
    assert np.asarray(out["engine_stats"]["shared_tokens"]) > 0
