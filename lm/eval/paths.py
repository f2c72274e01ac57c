"""Where evaluation data lives: never in the repository, always reached by a path or an environment variable.

`LM_SHARED_DIR` points at the shared folder (default: `shared/` beside the
checkout); the benchmark sets are under `data/corpora/a5_eval_data/`
(`mmlu/{dev,val,test}/*.csv`, `gsm8k/{train,test}.jsonl`). `LM_EVAL_DATA`
overrides that folder directly.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    return Path(os.environ.get("LM_SHARED_DIR", REPO.parent / "shared"))


def default_eval_data_dir() -> Path:
    env = os.environ.get("LM_EVAL_DATA")
    return Path(env) if env else shared_dir() / "data" / "corpora" / "a5_eval_data"
