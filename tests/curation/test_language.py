"""Language identification, offline, with three backends and a user model path."""

import pytest

from lm.curation.language import bundled_lid_model, identify_language

from .conftest import FRENCH, GERMAN

SAMPLES = {
    "en": "The documentation explains how to install and configure the system, and what to check afterwards.",
    "de": GERMAN, "fr": FRENCH,
    "es": "La documentación explica cómo instalar y configurar el sistema y qué comprobar después.",
    "ja": "このドキュメントでは、システムのインストールと設定の方法を説明します。",
    "zh": "本文档说明如何安装和配置系统，以及安装后需要检查的内容。",
    "ru": "В документации объясняется, как установить и настроить систему и что проверить после установки.",
}


@pytest.mark.parametrize("backend", ["fasttext", "langid", "cld2"])
def test_backends_agree_on_clear_text(backend):
    for lang, text in SAMPLES.items():
        got, score = identify_language(text, backend)
        assert got == lang, (backend, lang, got)
        assert 0.3 < score <= 1.0


@pytest.mark.parametrize("backend", ["fasttext", "langid", "cld2"])
def test_empty_and_junk(backend):
    assert identify_language("", backend) == ("unknown", 0.0)
    assert identify_language("   \n ", backend) == ("unknown", 0.0)
    lang, score = identify_language("\x00\x01 12345 !!! ---", backend)
    assert isinstance(lang, str) and 0.0 <= score <= 1.0


def test_model_path_is_used(tmp_path):
    """A user's fastText model (here a two-label toy trained in the test) replaces the default."""
    from lm.curation.fasttext_util import fasttext_module

    ft = fasttext_module(need_training=True)
    rows = [f"__label__xx {SAMPLES['en']}"] * 20 + [f"__label__yy {GERMAN}"] * 20
    (tmp_path / "train.txt").write_text("\n".join(rows) + "\n")
    model = ft.train_supervised(input=str(tmp_path / "train.txt"), epoch=20, thread=1, seed=0, verbose=0)
    model.save_model(str(tmp_path / "toy.bin"))
    assert identify_language(SAMPLES["en"], model_path=tmp_path / "toy.bin")[0] == "xx"
    assert identify_language(GERMAN, model_path=tmp_path / "toy.bin")[0] == "yy"
    assert identify_language(GERMAN, model_path=bundled_lid_model())[0] == "de"
    with pytest.raises(FileNotFoundError, match="not found"):
        identify_language("text", model_path=tmp_path / "missing.bin")
    with pytest.raises(ValueError, match="backend"):
        identify_language("text", backend="nope")


def test_whole_document_is_sampled_not_its_opening():
    """A long page whose first 10,000 characters are another language (or a table of contents) is
    judged by text spread over all of it."""
    english = " ".join([SAMPLES["en"]] * 1000)  # ~100,000 characters
    text = " ".join([GERMAN] * 30)[:10_500] + "\n" + english
    lang, score = identify_language(text)
    assert lang == "en" and score > 0.5, (lang, score)
    assert identify_language(GERMAN)[0] == "de"  # short text: all of it
