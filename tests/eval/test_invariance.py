"""A row's log-likelihoods do not depend on the batch size, its batch-mates or their padding: bitwise, on CPU."""

import jax
import numpy as np
import pytest

from lm.eval.scoring import score_continuations, shared_lengths
from tests.eval.models import config
from tests.inference.tiny import random_params


@pytest.fixture(scope="module")
def model():
    c = config(context_length=128, n_layers=2, sliding_window=0)
    return random_params(c, 3), c


def _requests(seed: int, n: int):
    """k-shot-like contexts: two 'subjects' whose prompts share a 40-token header, plus loners; 2-8 token
    answers. Lengths vary inside one padded width (64 rest tokens, 8 answer tokens) so that few shapes compile."""
    rng = np.random.default_rng(seed)
    headers = [rng.integers(0, 257, 40).tolist() for _ in range(2)]
    out = []
    for i in range(n):
        head = headers[i % 3] if i % 3 < 2 else []
        ctx = head + rng.integers(0, 257, rng.integers(1, 64 - len(head))).tolist()
        out.append((ctx, [rng.integers(0, 257, rng.integers(2, 9)).tolist() for _ in range(4)]))
    return out


def _lps(scores):
    return np.array([[s[0] for s in row] for row in scores], np.float32)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="bitwise invariance is promised on CPU")
@pytest.mark.parametrize("share_prefix", [False, True])
def test_scores_are_bitwise_independent_of_batch_size_and_neighbours(model, share_prefix):
    params, c = model
    reqs = _requests(0, 24)  # 8 per group: batches of 8 rows (or 1), few shapes to compile
    lens = shared_lengths([r[0] for r in reqs])
    assert sum(x >= 40 for x in lens) == 16  # the two headers are found (they may share a token or two more)
    by_batch = [_lps(score_continuations(params, c, reqs, batch_size=b, share_prefix=share_prefix,
                                         shared_lens=lens)) for b in (1, 8, 32)]
    for other in by_batch[1:]:
        assert np.array_equal(by_batch[0], other), np.abs(by_batch[0] - other).max()
    # The same requests among strangers with other lengths (other padding), in another order.
    strangers = _requests(1, 8)
    mixed = strangers[:5] + reqs[::-1] + strangers[5:]
    got = _lps(score_continuations(params, c, mixed, batch_size=8, share_prefix=share_prefix,
                                   shared_lens=[0] * 5 + lens[::-1] + [0] * 3))[5:-3][::-1]
    assert np.array_equal(by_batch[0], got), np.abs(by_batch[0] - got).max()
    if share_prefix:  # without explicit lengths the prefixes are found over the set, the same here
        auto = _lps(score_continuations(params, c, reqs, batch_size=8))
        assert np.array_equal(by_batch[0], auto)
    else:
        shared = _lps(score_continuations(params, c, reqs, batch_size=8, shared_lens=lens))
        np.testing.assert_allclose(shared, by_batch[0], rtol=0, atol=2e-5)  # prefix as a separate part: not bitwise


def test_prefix_cache_reads_a_header_once_across_calls(model, monkeypatch):
    """Scoring in chunks with one prefix_cache (as experiments.eval does) reads each shared prefix once per run of
    chunks that use it, and gives the numbers of scoring everything at once, bitwise."""
    from lm.eval import scoring

    params, c = model
    reqs = _requests(0, 24)
    lens = shared_lengths([r[0] for r in reqs])
    order = sorted(range(len(reqs)), key=lambda i: (lens[i] == 0, reqs[i][0][:lens[i]]))  # by header, as MMLU
    whole = _lps(score_continuations(params, c, reqs, batch_size=8, shared_lens=lens))
    programs = scoring._programs()
    reads = []
    read_prefix = programs["_read_prefix"]
    monkeypatch.setitem(programs, "_read_prefix", lambda *a, **k: reads.append(1) or read_prefix(*a, **k))
    cache: dict = {}
    chunked = np.zeros_like(whole)
    for s in range(0, 24, 5):  # chunks of 5 cut each header's 8 requests in two
        idx = order[s: s + 5]
        chunked[idx] = _lps(score_continuations(params, c, [reqs[i] for i in idx], batch_size=8,
                                                shared_lens=[lens[i] for i in idx], prefix_cache=cache))
    assert len(reads) == 2 and len(cache) == 1  # two headers, each read once; only the last one kept
    assert np.array_equal(chunked, whole)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="bitwise invariance is promised on CPU")
def test_invariance_holds_at_realistic_widths():
    """At d_model 32 every batch size happens to round alike; at d_model 384 (heads of 64, as in SmolLM2)
    a batch of 8 rows read as one matrix rounded differently from one row (up to 7.6e-6 here, 1.3e-5 on
    SmolLM2-135M), which is why the scorer runs rows one at a time inside its programs."""
    c = config(context_length=256, n_layers=1, sliding_window=0, d_model=384, n_heads=6, n_kv_heads=3, d_ff=768)
    params = random_params(c, 3, scale=0.05)
    rng = np.random.default_rng(0)
    head = rng.integers(0, 257, 100).tolist()
    reqs = [(head + rng.integers(0, 257, rng.integers(70, 120)).tolist(),
             [rng.integers(0, 257, rng.integers(2, 9)).tolist() for _ in range(4)]) for _ in range(8)]
    lens = shared_lengths([r[0] for r in reqs])
    one, eight = (_lps(score_continuations(params, c, reqs, b, shared_lens=lens)) for b in (1, 8))
    assert np.array_equal(one, eight), np.abs(one - eight).max()
