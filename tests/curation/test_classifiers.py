"""Harmful-content classifiers (offline default and fastText from a path) and the quality classifier."""

import random

import pytest

from lm.curation.harmful import (FastTextClassifier, harmful_filter, harmful_filter_batch,
                                 load_harmful_classifier)
from lm.curation.quality import quality_filter, quality_score, train_quality_classifier

CLEAN = ["The weather is lovely today and the garden is full of flowers.",
         "Install the package, then restart the service and read the log file.",
         "Thank you for your help with the report; the figures look right."]
TOXIC = ["you are a fucking idiot and everyone hates you", "shut up you stupid bitch",
         "what a worthless piece of shit you are"]


def test_offline_toxic_default():
    clf = load_harmful_classifier("toxic")
    for t in CLEAN:
        label, p = clf(t)
        assert label == "non-toxic" and p < 0.5
    for t in TOXIC:
        label, p = clf(t)
        assert label == "toxic" and p > 0.5
    assert [v for v, _ in harmful_filter_batch(CLEAN + TOXIC, [clf])] == [True] * 3 + [False] * 3
    assert harmful_filter(TOXIC[0], [clf]) == (False, "toxic")
    assert clf.batch([]) == []


def test_nsfw_needs_a_model_path():
    with pytest.raises(ValueError, match="pass the path"):
        load_harmful_classifier("nsfw")


@pytest.fixture(scope="module")
def toy_nsfw_model(tmp_path_factory):
    """A fastText model with Dolma's label names, trained here on made-up examples."""
    from lm.curation.fasttext_util import fasttext_module

    ft = fasttext_module(need_training=True)
    rng = random.Random(0)
    bad = ["explicit", "nude", "porn", "xxx", "sexy", "naked"]
    good = ["garden", "install", "report", "weather", "package", "figures", "service", "river"]
    rows = [f"__label__nsfw {' '.join(rng.choices(bad, k=6) + rng.choices(good, k=2))}" for _ in range(200)]
    rows += [f"__label__non-nsfw {' '.join(rng.choices(good, k=8))}" for _ in range(200)]
    d = tmp_path_factory.mktemp("nsfw")
    (d / "train.txt").write_text("\n".join(rows) + "\n")
    model = ft.train_supervised(input=str(d / "train.txt"), epoch=10, thread=1, seed=0, verbose=0)
    model.save_model(str(d / "nsfw.bin"))
    return d / "nsfw.bin"


def test_fasttext_classifier_from_path(toy_nsfw_model):
    clf = load_harmful_classifier("nsfw", toy_nsfw_model)
    assert isinstance(clf, FastTextClassifier)
    label, p = clf("naked explicit xxx porn garden")
    assert label == "nsfw" and p > 0.5
    label, p = clf("the garden report about the weather and the river")
    assert label == "non-nsfw" and p < 0.5
    keep = harmful_filter_batch(["porn xxx nude", "weather report"], [clf, load_harmful_classifier("toxic")])
    assert keep == [(False, "nsfw"), (True, None)]
    with pytest.raises(ValueError, match="not one of"):
        FastTextClassifier(str(toy_nsfw_model), positive="toxic")("text")


def _spam(rng, vocab):
    kind = rng.randrange(3)
    if kind == 0:
        return " | ".join(rng.choice(["Home", "Login", "Cart", "Sale", "Contact", "FAQ", "Blog"]) for _ in range(40))
    if kind == 1:
        return " ".join(rng.choice(["cheap", "best", "buy", "free", "viagra", "casino", "click", "now", "deal"])
                        for _ in range(80))
    return " ".join(rng.choice(vocab) for _ in range(80))  # word salad from real words


def test_quality_classifier_trains_saves_loads_and_scores(tmp_path, english_docs):
    rng = random.Random(0)
    vocab = sorted({w for d in english_docs for w in d.split()})
    pos = english_docs
    neg = [_spam(rng, vocab) for _ in range(len(pos))]
    cut = len(pos) * 3 // 4
    path = train_quality_classifier(pos[:cut], neg[:cut], tmp_path / "q.bin", epoch=8)
    scores_pos = [quality_score(t, path) for t in pos[cut:]]
    scores_neg = [quality_score(t, path) for t in neg[cut:]]
    acc = (sum(s >= 0.5 for s in scores_pos) + sum(s < 0.5 for s in scores_neg)) / (len(scores_pos) + len(scores_neg))
    assert acc >= 0.9, acc
    # Reloading from disk in a fresh copy gives the same scores.
    copy = tmp_path / "copy.bin"
    copy.write_bytes(path.read_bytes())
    assert [quality_score(t, copy) for t in pos[cut:]] == pytest.approx(scores_pos)
    assert quality_filter(neg[-1], path)[0] is (quality_score(neg[-1], path) >= 0.5)
    with pytest.raises(ValueError, match="need positive and negative"):
        train_quality_classifier(pos, [], tmp_path / "x.bin")


def test_quality_rejects_a_model_with_other_labels(toy_nsfw_model):
    with pytest.raises(ValueError, match="not the quality labels"):
        quality_score("text", toy_nsfw_model)
