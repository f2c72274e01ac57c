"""The harness against `transformers`: 50 MMLU questions, same prompts, same chosen answers.

Needs the converted SmolLM2-135M-Instruct folder ($LM_SMOLLM2_DIR, default runs/smollm2-135m-instruct;
made by `python -m experiments.convert_hf`), transformers and the shared
MMLU files; skips otherwise. Slow (minutes on a CPU): `pytest -m slow tests/eval/test_hf_agreement.py`.
"""

import os
from pathlib import Path

import pytest

from lm.eval.paths import REPO, default_eval_data_dir

MODEL_DIR = Path(os.environ.get("LM_SMOLLM2_DIR", REPO / "runs" / "smollm2-135m-instruct"))


@pytest.mark.slow
def test_transformers_chooses_the_same_answers_on_50_mmlu_questions():
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    if not (MODEL_DIR / "config.json").is_file():
        pytest.skip(f"no converted SmolLM2 at {MODEL_DIR} (set LM_SMOLLM2_DIR)")
    if not (default_eval_data_dir() / "mmlu" / "val").is_dir():
        pytest.skip("shared MMLU files not found (set LM_SHARED_DIR)")
    from experiments.eval_hf_check import HFCheckConfig, check

    report = check(HFCheckConfig(hf_dir=str(MODEL_DIR), limit=50), progress=False)
    assert report["n"] == 50
    assert report["same_token_ids"] == 50  # our tokenizer wrapper and AutoTokenizer agree on every prompt
    assert report["agree"] == 50, [r for r in report["rows"] if r["ours"] != r["hf"] or r["ours_norm"] != r["hf_norm"]]
    assert report["max_abs_logprob_diff"] < 1e-3  # float32 on both sides
