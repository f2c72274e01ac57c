import os
from pathlib import Path

import pytest

from lm.xla_flags import apply_default_flags

REPO = Path(__file__).resolve().parents[1]
# The suite owns its processes, as the experiments' mains do: it runs under the flags they set (before any test
# starts JAX's backend), so its numbers match `python -m experiments.X`. Importing lm alone sets nothing.
apply_default_flags()


def shared_dir() -> Path:
    """The shared data folder: $LM_SHARED_DIR, else ../shared beside the checkout."""
    return Path(os.environ.get("LM_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    d = shared_dir() / "data" / "corpora"
    if not (d / "gpt2_vocab.json").is_file():
        pytest.skip(f"shared corpora not found at {d} (set LM_SHARED_DIR to the shared/ folder)")
    return d


@pytest.fixture(scope="session")
def tiktoken_gpt2(corpora_dir):
    tiktoken = pytest.importorskip("tiktoken")
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(corpora_dir / "tiktoken_gpt2_cache"))
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:  # no cache and no network
        pytest.skip(f"tiktoken gpt2 encoding unavailable offline: {e}")
