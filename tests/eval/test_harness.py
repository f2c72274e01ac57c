"""Our MMLU prompts are lm-evaluation-harness's, character for character (from the task files
experiments.eval_harness_check writes), and the full check against its HF backend (slow, needs SmolLM2)."""

import os
from pathlib import Path

import pytest

from experiments.eval_harness_check import HarnessCheckConfig, check, write_tasks
from lm.eval.mmlu import mmlu_examples
from tests.eval.test_mmlu import ROWS, mmlu_dir  # noqa: F401  (the fixture)

lm_eval = pytest.importorskip("lm_eval")
SMOLLM2 = Path(__file__).resolve().parents[2] / "runs" / "smollm2-135m-instruct"


@pytest.mark.parametrize("fmt", ["letter", "cloze"])
def test_harness_builds_our_prompts_and_choices(mmlu_dir, tmp_path, fmt):  # noqa: F811
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager, get_task_dict

    names = write_tasks(mmlu_dir, ["alpha_beta", "gamma"], "val", fmt, tmp_path)
    tasks = get_task_dict(list(names.values()), TaskManager(include_path=str(tmp_path), include_defaults=False))
    ours = {(e.meta["subject"], e.meta["index"]): e for e in mmlu_examples(mmlu_dir, "val", 2, fmt)}
    seen = 0
    for subject, name in names.items():
        task = tasks[name]
        task.set_config(key="num_fewshot", value=2)
        task.build_all_requests(rank=0, world_size=1)
        for inst in task.instances:
            ex = ours[(subject, inst.doc_id)]
            context, continuation = inst.arguments
            assert context == ex.prompt and continuation == ex.choices[inst.idx]
            seen += 1
    assert seen == 4 * sum(len(v) for v in ROWS["val"].values())


@pytest.mark.slow
def test_agreement_with_lm_eval_on_smollm2():
    if not (SMOLLM2 / "config.json").is_file():
        pytest.skip(f"SmolLM2 not converted at {SMOLLM2} (python -m experiments.convert_hf)")
    r = check(HarnessCheckConfig(hf_dir=str(SMOLLM2), subjects=("abstract_algebra", "business_ethics")))
    assert r["agree"] >= 0.99 * r["n"] and r["max_abs_loglik_diff"] < 1e-3 and r["same_prompt"] == r["n"]
