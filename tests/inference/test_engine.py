"""The continuous-batching engine: exact greedy output, batch invariance, prefix sharing, stops, cancel."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from lm.inference.engine import Engine, EngineConfig
from lm.inference.pages import PageTable
from lm.inference.request import Request
from lm.inference.sampling import SamplingConfig
from lm.tokenizer import Tokenizer
from tests.inference.tiny import full_forward, model

# One set of shapes for every test here, so the prefill and decode programs compile once.
ECFG = EngineConfig(slots=3, page_size=4, prefill_chunk=8, decode_steps=4, bucket_reads=False)
GREEDY = SamplingConfig(temperature=0, max_new_tokens=10)
# Reads sized to the longest row, in blocks of 2 pages: a row alone reads fewer pages than in a busy batch.
BUCKETED = dataclasses.replace(ECFG, bucket_reads=True, key_block=8)


@pytest.fixture(scope="module")
def tiny():
    return model("gqa-window")


def byte_tokenizer():
    """Bytes 0-255 and <|endoftext|> = 256: the tiny models' 257-token vocabulary."""
    return Tokenizer({i: bytes([i]) for i in range(256)}, [], special_tokens=["<|endoftext|>"])


def greedy_reference(params, c, prompt, n):
    """Greedy tokens from the full forward pass over a fixed-width buffer (no cache at all)."""
    buf = np.zeros((1, c.context_length), np.int32)
    buf[0, : len(prompt)] = prompt
    out = []
    for i in range(min(n, c.context_length - len(prompt) + 1)):
        tok = int(jnp.argmax(full_forward(params, jnp.asarray(buf), config=c)[0, len(prompt) + i - 1]))
        out.append(tok)
        if len(prompt) + i < c.context_length:
            buf[0, len(prompt) + i] = tok
    return out


def prompts(c, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, n).tolist() for n in lengths]


def test_greedy_equals_the_full_forward_pass_with_more_requests_than_slots(tiny):
    """Eight prompts (1 to 30 tokens: chunked prefill, one ending at the context) through three slots:
    each request's tokens are the model's own greedy continuation."""
    params, c = tiny
    ps = prompts(c, (3, 9, 17, 5, 12, 30, 1, 8))
    eng = Engine(params, c, ECFG)
    reqs = eng.generate([Request(p, GREEDY) for p in ps])
    for p, r in zip(ps, reqs):
        assert r.tokens == greedy_reference(params, c, p, 10), f"prompt of {len(p)} tokens"
        assert r.finish_reason == "length"
    assert eng.pages.available == eng.pages.num_pages and eng.in_flight == 0  # every page came back


def test_a_request_gives_the_same_tokens_alone_and_in_a_busy_batch(tiny):
    """The same request (sampled with its own temperature, top-k, top-p and seed; and greedy) run alone,
    and run third in a batch of requests with other settings that are already decoding (so another slot,
    other neighbours, joining mid-flight, and reads sized to longer rows than its own): identical tokens."""
    params, c = tiny
    target = prompts(c, (5,), seed=5)[0]  # 5 + 10 tokens: alone, it never reads more than 4 pages
    settings = [SamplingConfig(temperature=2.0, top_k=100, top_p=0.98, max_new_tokens=10, seed=7), GREEDY]

    def others():
        return [Request(p, SamplingConfig(temperature=t, top_p=0.8, max_new_tokens=n, seed=i))
                for i, (p, t, n) in enumerate(zip(prompts(c, (6, 13, 4, 9), seed=1), (1.3, 0.0, 0.7, 1.0),
                                                  (14, 12, 5, 9)))]

    for s in settings:
        lone = Engine(params, c, BUCKETED)
        alone = lone.generate([Request(target, s)])[0].tokens
        busy = Engine(params, c, BUCKETED)
        rest = others()
        for o in rest[:2]:
            busy.submit(o)
        busy.step()
        busy.step()
        req = busy.submit(Request(target, s))
        for o in rest[2:]:
            busy.submit(o)
        neighbours, slots = 0, set()
        while not req.done:
            busy.step()
            if req in busy.requests:
                neighbours = max(neighbours, sum(r is not None for r in busy.requests) - 1)
                slots.add(busy.requests.index(req))
        assert neighbours == 2 and slots == {2}  # it really shared the batch, in another slot
        assert req.tokens == alone and len(alone) == s.max_new_tokens
        # alone it reads at most 2 blocks; its neighbours (up to 27 tokens) make the busy batch read 4
        assert "decode_read_pages_8" not in lone.stats and busy.stats["decode_read_pages_8"] > 0


def test_prefix_sharing_reuses_pages_and_changes_nothing(tiny):
    """G = 4 samples of one 13-token prompt (a GRPO group): the later three read the first's three full
    pages instead of prefilling them, the tokens equal an engine without sharing, the refcounts go back to
    zero, and a later request with the same prefix still finds the (cached, unreferenced) pages."""
    params, c = tiny
    prompt = prompts(c, (13,), seed=3)[0]
    group = [SamplingConfig(temperature=1.0, max_new_tokens=6, seed=s) for s in range(4)]
    shared = Engine(params, c, ECFG)
    got = [r.tokens for r in shared.generate([Request(prompt, s) for s in group])]
    plain = Engine(params, c, dataclasses.replace(ECFG, prefix_sharing=False))
    want = [r.tokens for r in plain.generate([Request(prompt, s) for s in group])]
    assert got == want
    assert shared.stats["shared_tokens"] == 3 * 12 and plain.stats["shared_tokens"] == 0
    assert shared.stats["prefill_tokens"] == 13 + 3 * 1 and plain.stats["prefill_tokens"] == 4 * 13
    assert not shared.pages.refs.any() and shared.pages.available == shared.pages.num_pages
    later = Request(prompt[:12] + [7, 8, 9], GREEDY)  # same three leading blocks, another ending
    shared.generate([later])
    assert shared.stats["shared_tokens"] == 4 * 12
    assert later.tokens == greedy_reference(params, c, later.prompt, 10)


def test_page_table_free_list_refcounts_and_lru_eviction():
    pages = PageTable(num_pages=4, page_size=2)
    a = pages.allocate(3)
    pages.register([1, 2, 3, 4, 5], a)  # two full blocks: pages a[0], a[1]
    assert pages.lookup([1, 2, 3, 4, 9, 9]) == a[:2] and list(pages.refs[a]) == [2, 2, 1]
    assert pages.lookup([1, 2, 7, 7]) == [a[0]]  # agrees on the first block only
    assert pages.lookup([9, 2, 3, 4]) == []
    pages.release(a + a[:2] + a[:1])
    assert not pages.refs.any() and pages.available == 4
    b = pages.allocate(2)  # the never-used page and the free one first; cached blocks survive
    assert set(b).isdisjoint(a[:2]) and pages.lookup([1, 2, 3, 4]) == a[:2]
    pages.release(a[:2])
    pages.allocate(2)  # now the cached blocks are evicted, least recently used first
    assert pages.lookup([1, 2, 3, 4]) == []
    with pytest.raises(ValueError, match="only 0 of 4"):
        pages.allocate(1)


def test_stop_ids_stop_strings_max_tokens_and_cancel(tiny):
    params, c = tiny
    tok = byte_tokenizer()
    prompt = prompts(c, (6,), seed=11)[0]
    eng = Engine(params, c, ECFG, tokenizer=tok)
    free = eng.generate([Request(prompt, dataclasses.replace(GREEDY, max_new_tokens=20))])[0]
    ids = free.tokens
    assert len(ids) == 20 and free.text == tok.decode(ids)
    # a stop id ends the request before that token
    r = eng.generate([Request(prompt, dataclasses.replace(GREEDY, stop_ids=(ids[5],), max_new_tokens=20))])[0]
    assert r.tokens == ids[: ids.index(ids[5])] and r.finish_reason == "stop"
    # a stop string (an ASCII byte the model produced) cuts the text before it
    i = next(i for i in range(2, 20) if 32 <= ids[i] < 127)
    stop = chr(ids[i])
    r = eng.generate([Request(prompt, dataclasses.replace(GREEDY, max_new_tokens=20), stop=(stop,))])[0]
    assert r.finish_reason == "stop" and r.text == free.text[: free.text.index(stop)]
    # cancelling a running request frees its slot and pages at the next step
    r = eng.submit(Request(prompt, dataclasses.replace(GREEDY, max_new_tokens=24)))
    for _ in range(3):
        eng.step()
    assert not r.done and r.tokens
    eng.cancel(r)
    eng.step()
    assert r.finish_reason == "cancelled" and eng.in_flight == 0 and eng.pages.available == eng.pages.num_pages
    with pytest.raises(ValueError, match="longer than the model's context_length=32"):
        eng.submit(Request(list(range(33)), GREEDY))
