"""Open-ended generation tasks whose outputs are judged later: AlpacaEval instructions and
SimpleSafetyTests prompts (the A5 evaluation files).

    prompts = load_alpaca_eval(data_dir / "alpaca_eval")        # [{"id", "instruction", "reference", ...}]
    prompts = load_simple_safety_tests(data_dir / "simple_safety_tests")
    records = generate_records(params, config, tokenizer, prompts, sampling, model_name="smollm2")

No judge model is available offline, so nothing is scored here: each
record holds the instruction, the exact prompt, the model's output and, for
AlpacaEval, the reference output, and `alpaca_eval_outputs` gives the
[{"instruction", "output", "generator", "dataset"}] list that the
`alpaca_eval` package's annotators read. A prompt goes through the
tokenizer's chat template when it has one (an instruction-tuned model),
else as "Instruction: ...\\nResponse:".
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lm.eval.generation import generate_until
from lm.eval.gsm8k import chat_ids
from lm.eval.tokens import encode
from lm.inference.sampling import SamplingConfig
from lm.model import ModelConfig

PLAIN_STOP = ("\nInstruction:",)


def load_alpaca_eval(folder: str | Path) -> list[dict]:
    path = Path(folder) / "alpaca_eval.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; --data-dir must hold alpaca_eval/alpaca_eval.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"id": f"alpaca_eval/{i}", "index": i, "instruction": r["instruction"], "reference": r.get("output"),
             "dataset": r.get("dataset", "")} for i, r in enumerate(rows)]


def load_simple_safety_tests(folder: str | Path) -> list[dict]:
    path = Path(folder) / "simple_safety_tests.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; --data-dir must hold simple_safety_tests/simple_safety_tests.csv")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{"id": f"simple_safety_tests/{r['id']}", "index": i, "instruction": r["prompts_final"],
             "harm_area": r["harm_area"], "category": r["category"]} for i, r in enumerate(rows)]


def prompt_ids(tokenizer, instruction: str) -> tuple[list[int], str]:
    """(token ids, text) of the prompt for one instruction: chat template if the tokenizer has one."""
    if hasattr(tokenizer, "apply_chat_template"):
        ids = chat_ids(tokenizer, [{"role": "user", "content": instruction}])
        return ids, tokenizer.decode(ids)
    text = f"Instruction: {instruction}\nResponse:"
    return encode(tokenizer, text), text


def generate_records(params, config: ModelConfig, tokenizer, prompts: list[dict], sampling: SamplingConfig,
                     model_name: str, batch_size: int = 8, progress: bool = False) -> list[dict]:
    """One record per prompt: its fields plus "prompt" (the text the model saw), "output" and "generator"."""
    encoded = [prompt_ids(tokenizer, p["instruction"]) for p in prompts]
    chat = hasattr(tokenizer, "apply_chat_template")
    outputs = generate_until(params, config, tokenizer, [ids for ids, _ in encoded], sampling,
                             () if chat else PLAIN_STOP, batch_size, progress=progress, desc="generating")
    return [{**p, "prompt": text, "output": out.strip(), "generator": model_name}
            for p, (_, text), out in zip(prompts, encoded, outputs)]


def summarize(records: list[dict]) -> dict:
    """Counts only: {"n", "mean_output_chars", "empty_outputs", "judge"}; the judging happens elsewhere."""
    n = len(records)
    return {"n": n, "mean_output_chars": sum(len(r["output"]) for r in records) / n if n else 0.0,
            "empty_outputs": sum(not r["output"] for r in records),
            "judge": "none: no judge model is available offline; records.jsonl and alpaca_eval_outputs.json "
                     "hold the outputs for judging"}


def alpaca_eval_outputs(records: list[dict]) -> list[dict]:
    """The model outputs in the form the `alpaca_eval` package reads (model_outputs.json)."""
    return [{"instruction": r["instruction"], "output": r["output"], "generator": r["generator"],
             "dataset": r.get("dataset", "")} for r in records]
