"""Speculative decoding: exact greedy output, and the target's distribution under sampling."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import lm.inference.speculative as spec
from lm.inference.generate import generate_ids
from lm.inference.sampling import SamplingConfig
from tests.inference.tiny import config, full_forward, model, random_params


def draft_model(vocab_size=257):
    return model("draft", seed=7, vocab_size=vocab_size)


GREEDY = SamplingConfig(temperature=0, max_new_tokens=20)
# One prompt-width bucket for all three (fewer compilations); the 17-token prompt runs into the
# context limit (32 - 17 + 1 = 16 tokens < 20).
PROMPTS = [[4], [1, 2, 3], list(range(10, 27))]


def test_greedy_speculative_is_the_target_greedy_output():
    tparams, tc = model("gqa-window")
    dparams, dc = draft_model()
    ref, n = generate_ids(tparams, tc, PROMPTS, GREEDY)
    assert n.tolist() == [20, 20, 16]
    for i, prompt in enumerate(PROMPTS):
        want = ref[i, : n[i]].tolist()
        for k in (1, 4):
            got = spec.speculative_generate(tparams, tc, dparams, dc, prompt, GREEDY, k)
            assert got.tokens == want, (prompt, k)
            assert got.proposed == k * got.rounds and 0 <= got.accepted <= got.proposed
        same = spec.speculative_generate(tparams, tc, tparams, tc, prompt, GREEDY, 4)  # target as its own draft
        assert same.tokens == want and same.acceptance_rate == 1.0 and same.rounds == -(-len(want) // 5)


def test_greedy_speculative_stops_and_streams():
    tparams, tc = model("gqa-window")
    dparams, dc = draft_model()
    want = spec.speculative_generate(tparams, tc, dparams, dc, [1, 2, 3], GREEDY, 4).tokens
    streamed = sum(spec.speculative_stream(tparams, tc, dparams, dc, [1, 2, 3], GREEDY, 4, chunk=4), [])
    assert streamed == want
    stop = want[5]
    s_stop = SamplingConfig(temperature=0, max_new_tokens=20, stop_ids=(stop,))
    assert spec.speculative_generate(tparams, tc, dparams, dc, [1, 2, 3], s_stop, 4).tokens == want[: want.index(stop)]


V, N = 8, 20_000


def first_token_counts(tparams, tc, dparams, dc, prompt, sampling, k):
    draw = jax.jit(jax.vmap(lambda key: spec.speculate(tparams, tc, dparams, dc, prompt, sampling, k, key)[0][0]))
    first = np.asarray(draw(jax.random.split(jax.random.PRNGKey(0), N)))
    return np.bincount(first, minlength=V)


def test_sampled_first_token_has_the_target_distribution(monkeypatch):
    """Chi-square over 20,000 seeds on an 8-token vocabulary. The draft is a different random model
    (its distribution is far from the target's), so a wrong residual is detected: replacing
    max(0, p - q) by p gives a p-value of ~0."""
    tc = config(vocab_size=V, context_length=16, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    tparams, dparams = random_params(tc, 0), random_params(tc, 5)
    prompt = [1, 2, 3]
    s = SamplingConfig(temperature=1.0, max_new_tokens=1)
    p = np.asarray(jax.nn.softmax(full_forward(tparams, jnp.asarray([prompt]), config=tc)[0, -1]), np.float64)
    q = np.asarray(jax.nn.softmax(full_forward(dparams, jnp.asarray([prompt]), config=tc)[0, -1]), np.float64)
    assert 0.5 * np.abs(p - q).sum() > 0.3  # the draft is often rejected, so the residual matters
    counts = first_token_counts(tparams, tc, dparams, tc, prompt, s, 3)
    assert stats.chisquare(counts, p / p.sum() * N).pvalue > 1e-3

    monkeypatch.setattr(spec, "_residual", lambda p, q: p)  # a wrong residual
    try:
        wrong = first_token_counts(tparams, tc, dparams, tc, prompt, s, 2)  # k=2: a fresh trace
    finally:
        jax.clear_caches()  # never let a later test reuse the program built with the wrong residual
    assert stats.chisquare(wrong, p / p.sum() * N).pvalue < 1e-6


def test_bad_draft():
    tparams, tc = model("gqa-window")
    dparams, dc = draft_model(vocab_size=64)
    with pytest.raises(ValueError, match="vocab_size"):
        spec.speculative_generate(tparams, tc, dparams, dc, [1], SamplingConfig(), 4)
    dparams, dc = draft_model()
    with pytest.raises(ValueError, match="draft length"):
        spec.speculative_generate(tparams, tc, dparams, dc, [1], SamplingConfig(), 0)
    with pytest.raises(ValueError, match="empty"):
        spec.speculative_generate(tparams, tc, dparams, dc, [], SamplingConfig(), 2)


def test_auto_draft_length_mixes_plain_and_speculative_segments_and_stays_exact():
    """draft_len="auto" with short segments: the first decisions (a plain segment that measures the cost to
    beat, then a probe of the only length) do not depend on timing, so both modes and the draft's catch-up
    over the tokens it missed always run; the output, whole or streamed, is still exactly the target's
    greedy output, up to the context limit."""
    tparams, tc = model("gqa-window")
    dparams, dc = draft_model()
    ref, n = generate_ids(tparams, tc, PROMPTS, GREEDY)

    def tuner():
        return spec.DraftTuner(ks=(4,), plain_segment=3, probe_rounds=2, reprobe_after=4)

    for i in (1, 2):
        got = spec.speculative_generate(tparams, tc, dparams, dc, PROMPTS[i], GREEDY, "auto", tuner=tuner())
        assert got.tokens == ref[i, : n[i]].tolist(), PROMPTS[i]
        lengths = got.draft_lengths
        assert lengths[0] == 0 and 4 in lengths and lengths.index(4) <= 2, lengths  # an untimed (compiling) repeat
        assert got.rounds >= 2 and got.proposed == 4 * got.rounds
    chunks = list(spec.speculative_stream(tparams, tc, dparams, dc, PROMPTS[1], GREEDY, "auto", tuner=tuner()))
    assert sum(chunks, []) == ref[1, : n[1]].tolist() and len(chunks) >= 3


def test_draft_tuner_turns_a_losing_draft_off_and_keeps_a_winning_one():
    """The tuner's decisions from given measurements (no clocks): plain tokens cost 1 s each."""
    lose = spec.DraftTuner(ks=(1, 2, 4), reprobe_after=64)
    assert lose.choose() == 0
    lose.observe_plain(16.0, 16)
    assert lose.choose() == 1  # the first probe: the cheapest length
    lose.observe_rounds(1, 8.0, 4, accepted=1, rejected=3)  # 2 s per round for ~1.3 tokens: slower than plain
    assert [lose.choose() for _ in range(3)] == [0, 0, 0] and lose.plain_steps() == 64  # off until the back-off
    lose.observe_plain(64.0, 64)
    assert lose.choose() == 1  # probe again (the text may have changed)...
    lose.observe_rounds(1, 8.0, 4, accepted=1, rejected=3)
    assert lose.choose() == 0 and lose.backoff == 128  # ...and after a second loss, wait twice as long

    win = spec.DraftTuner(ks=(1, 2, 4), reprobe_after=64)
    win.observe_plain(16.0, 16)
    assert win.choose() == 1
    win.observe_rounds(1, 5.0, 4, accepted=4, rejected=0)  # 1.25 s per round, everything accepted
    assert win.choose() == 2  # 1 is faster than plain, and 2 might be faster still: probe it
    win.observe_rounds(2, 6.0, 4, accepted=8, rejected=0)
    assert win.choose() == 4
    win.observe_rounds(4, 40.0, 4, accepted=12, rejected=4)  # 10 s rounds: too slow
    assert win.choose() == 2 and win.speed(2)[0] > win.speed(4)[0] and win.speed(2)[0] > 1.0
    with pytest.raises(ValueError, match="ks"):
        spec.DraftTuner(ks=(0,))
    with pytest.raises(ValueError, match="margin"):
        spec.DraftTuner(margin=-1)


def test_draft_tuner_climbs_while_a_longer_draft_may_pay_and_stops_where_the_cost_line_says_not():
    """Plain tokens cost 1 s. Acceptance 0.6: length 1 wins a little (1.6 tokens per 1.4 s round), so 2 is
    probed (predicted at the cautious acceptance 0.45: 1.64 tokens per >= 1.4 s), and loses (1.96 per
    1.9 s). The line through the two round costs puts length 4 at >= 2.9 s for 2.31 tokens (1.93 at the
    cautious acceptance): not worth a probe."""
    t = spec.DraftTuner(ks=(1, 2, 4))
    t.observe_plain(16.0, 16)
    assert t.choose() == 1
    t.observe_rounds(1, 8 * 1.4, 8, accepted=5, rejected=3)
    assert t.acceptance == pytest.approx(0.6) and t.choose() == 2
    t.observe_rounds(2, 5 * 1.9, 5, accepted=6, rejected=4)
    assert t.acceptance == pytest.approx(0.6) and t.round_cost(4) == (pytest.approx(2.9), False)
    assert t.choose() == 1 and 4 not in t.history
    # Acceptance 0.95: length 1 does not even break even (1.95 tokens per 2.1 s round), but length 2 may
    # (2.85 tokens per >= 2.1 s), so it is probed at once rather than after the back-off.
    # Two of four probe rounds accepted, rounds of 1.55 plain steps: at the point estimate 0.5, length 2 would be
    # predicted 13% faster than plain and probed; one standard error lower (0.30) it is not.
    lucky = spec.DraftTuner(ks=(1, 2, 4))
    lucky.observe_plain(16.0, 16)
    assert lucky.choose() == 1
    lucky.observe_rounds(1, 4 * 1.55, 4, accepted=2, rejected=2)
    assert lucky.expected_tokens(2) / lucky.round_cost(2)[0] > 1.1 and lucky.cautious_acceptance < 0.31
    assert lucky.choose() == 0 and 2 not in lucky.history
    hi = spec.DraftTuner(ks=(1, 2, 4))
    hi.observe_plain(16.0, 16)
    assert hi.choose() == 1
    hi.observe_rounds(1, 20 * 2.1, 20, accepted=18, rejected=0)
    assert not hi.winning() and hi.choose() == 2


@dataclasses.dataclass
class Scripted(spec.DraftTuner):
    """Follows a fixed schedule of draft lengths (0: plain), then decodes plainly, whatever it measures:
    short segments, so that every transition between the modes runs."""
    schedule: tuple = ()

    def choose(self) -> int:
        done = len(self.history)
        return self._pick(self.schedule[done] if done < len(self.schedule) else 0)

    def plain_steps(self) -> int:
        return 3

    def rounds_for(self, k: int) -> int:
        return 2


def test_auto_plain_segments_are_plain_decoding_and_sampled_auto_is_reproducible():
    """Auto's state is plain decoding's: a tuner that never speculates gives exactly plain sampled decoding's
    tokens (same key, same programs). With speculative segments in between (sampled, so the random
    stream differs from plain decoding), the output is reproducible under a seed, streams the same, and a
    stop token emitted inside a round or a plain segment ends it exactly where the unstopped output had it."""
    tparams, tc = model("gqa-window")
    dparams, dc = draft_model()
    s = SamplingConfig(temperature=1.0, max_new_tokens=28, seed=3)
    for prompt in PROMPTS[:2]:
        ref, n = generate_ids(tparams, tc, [prompt], s)
        got = spec.speculative_generate(tparams, tc, dparams, dc, prompt, s, "auto", tuner=Scripted())
        assert got.tokens == ref[0, : n[0]].tolist() and got.rounds == 0, prompt

    schedule = (0, 2, 0, 1, 1, 0, 2, 2, 0, 1)

    def scripted(sampling):
        return spec.speculative_generate(tparams, tc, dparams, dc, PROMPTS[1], sampling, "auto",
                                         tuner=Scripted(schedule=schedule))

    want = scripted(s)
    assert len(want.tokens) == 28 and want.rounds >= 8 and set(want.draft_lengths) == {0, 1, 2}
    assert scripted(s).tokens == want.tokens
    streamed = spec.speculative_stream(tparams, tc, dparams, dc, PROMPTS[1], s, "auto",
                                       tuner=Scripted(schedule=schedule))
    assert sum(streamed, []) == want.tokens
    assert scripted(dataclasses.replace(s, seed=4)).tokens != want.tokens


def test_auto_greedy_stays_exact_near_the_context_limit_and_at_stop_tokens():
    """Greedy, every mode switch (k up to 8 on a 16-token budget: rounds that would pass the limit are left to
    plain decoding) still gives the target's greedy output, cut at a stop token wherever it falls."""
    tparams, tc = model("gqa-window")
    dparams, dc = draft_model()
    ref, n = generate_ids(tparams, tc, PROMPTS, GREEDY)
    schedule = (0, 8, 0, 2, 8, 8)
    for i, prompt in enumerate(PROMPTS):
        want = ref[i, : n[i]].tolist()
        got = spec.speculative_generate(tparams, tc, dparams, dc, prompt, GREEDY, "auto",
                                        tuner=Scripted(schedule=schedule))
        assert got.tokens == want and 8 in got.draft_lengths, prompt
    want = ref[1, : n[1]].tolist()
    at = next(at for at in range(7, 20) if want[at] not in want[:at])
    s = dataclasses.replace(GREEDY, stop_ids=(want[at],))
    assert spec.speculative_generate(tparams, tc, dparams, dc, PROMPTS[1], s, "auto",
                                     tuner=Scripted(schedule=schedule)).tokens == want[:at]
