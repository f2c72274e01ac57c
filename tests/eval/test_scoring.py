"""Log-likelihood scoring against a brute-force forward pass, padding invariance, and planted answers."""

import jax.numpy as jnp
import numpy as np
import pytest

from lm.eval.multiple_choice import Choice, evaluate_choices, norm_length, pick
from lm.eval.scoring import score_continuations
from tests.eval.models import byte_tokenizer, chain_model, config
from tests.inference.tiny import full_forward, random_params


def _brute(params, c, ctx, cont):
    """log p(cont | ctx) in float64 from one full forward pass over ctx + cont."""
    ids = np.array([*ctx, *cont])
    padded = np.zeros(c.context_length, np.int32)  # right padding: a causal model's earlier logits ignore it,
    padded[: len(ids)] = ids  # and one shape means one compilation
    x = np.asarray(full_forward(params, jnp.asarray(padded[None]), config=c)[0], np.float64)
    m = x.max(-1, keepdims=True)
    lp = x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
    return sum(lp[len(ctx) - 1 + j, t] for j, t in enumerate(cont))


@pytest.mark.parametrize("variant", [dict(n_layers=2),
                                     dict(sliding_window=6, tie_embeddings=True, positions="learned")])
def test_scores_match_a_full_forward_pass_and_ignore_padding(variant):
    c = config(**variant)
    params = random_params(c, 1)
    rng = np.random.default_rng(0)
    requests = [(rng.integers(0, 257, rng.integers(1, 24)).tolist(),
                 [rng.integers(0, 257, rng.integers(1, 7)).tolist() for _ in range(rng.integers(2, 5))])
                for _ in range(6)]
    batched = score_continuations(params, c, requests, batch_size=3)  # mixed lengths, left/right padding
    for (ctx, conts), got in zip(requests, batched):
        assert len(got) == len(conts)
        for cont, (lp, n, _) in zip(conts, got):
            assert n == len(cont)
            np.testing.assert_allclose(lp, _brute(params, c, ctx, cont), rtol=1e-5, atol=1e-5)
    alone = score_continuations(params, c, requests[:1], batch_size=3)  # same shapes, other rows padding
    np.testing.assert_allclose([s[0] for s in alone[0]], [s[0] for s in batched[0]], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("share_prefix", [True, False])
def test_shared_prompt_prefix_is_read_once_with_the_same_scores(share_prefix):
    c = config(context_length=128, sliding_window=0)
    params = random_params(c, 6)
    rng = np.random.default_rng(1)
    shots = rng.integers(0, 257, 40).tolist()  # a k-shot header shared by every prompt (>= MIN_SHARED tokens)
    requests = [(shots + rng.integers(0, 257, rng.integers(1, 9)).tolist(),
                 [rng.integers(0, 257, rng.integers(1, 4)).tolist() for _ in range(3)]) for _ in range(5)]
    requests.append((shots[:20] + [1, 2], [[3], [4, 5]]))  # shares only 20 tokens: its batch-mates share fewer
    got = score_continuations(params, c, requests, batch_size=3, share_prefix=share_prefix)
    for (ctx, conts), scores in zip(requests, got):
        for cont, (lp, _, _) in zip(conts, scores):
            np.testing.assert_allclose(lp, _brute(params, c, ctx, cont), rtol=1e-5, atol=1e-5)


def test_long_context_is_cut_from_the_left():
    c = config(sliding_window=0)
    params = random_params(c, 2)
    ctx = list(range(1, 60))  # longer than context_length = 32
    (got,) = score_continuations(params, c, [(ctx, [[7, 8, 9]])])
    np.testing.assert_allclose(got[0][0], _brute(params, c, ctx[-29:], [7, 8, 9]), rtol=1e-5)


def test_single_token_choices_use_the_prompt_logits_only():
    c = config()
    params = random_params(c, 4)
    requests = [([3, 4, 5], [[10], [11], [12], [13]]), ([9] * 20, [[1], [2], [3], [4]])]
    for (ctx, conts), got in zip(requests, score_continuations(params, c, requests, batch_size=2)):
        for cont, (lp, _, _) in zip(conts, got):
            np.testing.assert_allclose(lp, _brute(params, c, ctx, cont), rtol=1e-5, atol=1e-5)


def test_multiple_choice_picks_the_planted_answer():
    params, c = chain_model({})  # after byte b comes b + 1
    tok = byte_tokenizer()
    ex = [Choice("Which letters come next? abc", ("xyz", "dog", "defgh", "dxyz"), gold=2),
          Choice("Digits: 0123", ("4567", "4444", "9"), gold=0),
          Choice("Next: mn", ("nm", "op"), gold=1)]
    r = evaluate_choices(params, c, tok, ex, batch_size=2)
    assert [x["pred"] for x in r["records"]] == [2, 0, 1] and r["acc"] == 1.0 and r["acc_norm"] == 1.0
    assert all(x["correct"] for x in r["records"]) and r["records"][0]["tokens"] == [3, 3, 5, 4]


def test_length_normalisation_and_ties():
    assert pick([-3.0, -2.0]) == 1
    assert pick([-3.0, -2.0], lengths=[6, 1]) == 0  # -0.5 per byte beats -2 per byte
    assert pick([-1.0, -1.0, -2.0]) == 0


def test_acc_norm_divides_by_characters_as_lm_eval_does():
    """lm-eval 0.4: argmax(lls / [len(choice) for choice in doc_to_choice(doc)]), the choice before its
    target_delimiter " " is put in front. Characters and UTF-8 bytes pick differently here."""
    choices, lls = (" \u00e9\u00e9", " abc"), [-2.5, -3.3]
    assert [norm_length(c) for c in choices] == [2, 3]
    lm_eval = int(np.argmax(np.array(lls) / np.array([float(len(c.removeprefix(" "))) for c in choices])))
    by_bytes = int(np.argmax(np.array(lls) / np.array([len(c.encode()) for c in choices])))
    assert pick(lls, [norm_length(c) for c in choices]) == lm_eval == 1 != by_bytes
    params, c = chain_model({})
    ex = Choice("x", choices, gold=1)
    (rec,) = evaluate_choices(params, c, byte_tokenizer(), [ex])["records"]
    lp = np.array(rec["logprobs"])
    assert rec["pred_norm"] == int(np.argmax(lp / [2, 3]))


def test_bad_requests():
    c = config()
    params = random_params(c, 0)
    with pytest.raises(ValueError, match="empty context"):
        score_continuations(params, c, [([], [[1]])])
    with pytest.raises(ValueError, match="non-empty continuations"):
        score_continuations(params, c, [([1], [[1], []])])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        score_continuations(params, c, [([1], [[300]])])
    with pytest.raises(ValueError, match="at least 2 choices"):
        Choice("q", ("a",), 0)
    with pytest.raises(ValueError, match="gold index 3"):
        Choice("q", ("a", "b"), 3)
