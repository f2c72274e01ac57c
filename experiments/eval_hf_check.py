"""Harness check: the same MMLU prompts scored by our harness and by `transformers`, answer by answer.

    python -m experiments.eval_hf_check --hf-dir runs/smollm2-135m-instruct --limit 50
    from experiments.eval_hf_check import HFCheckConfig, check
    report = check(HFCheckConfig(hf_dir=DIR, limit=50))   # {"agree", "n", "max_abs_logprob_diff", "rows"}

Both sides get the same prompt texts (k-shot MMLU from `lm.eval.mmlu`). The
prompts are tokenized twice, by our loader's tokenizer and by transformers'
AutoTokenizer, and the ids must match; then transformers' model (torch,
float32, eager attention) scores every choice by its summed log-probability
given the prompt, and the chosen answers are compared with ours. It prints
one line per question and a summary, and exits 1 if any answer differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from lm.cli_env import prepare_process


@dataclasses.dataclass(frozen=True)
class HFCheckConfig:
    hf_dir: str = dataclasses.field(default="", metadata={"help": "Hugging Face model folder (safetensors)"})
    data_dir: str = dataclasses.field(default="", metadata={"help": "folder with mmlu/ (default: shared)"})
    split: str = "val"
    shots: int = 5
    limit: int = 50
    mmlu_format: str = "letter"
    batch_size: int = 4
    out: str = dataclasses.field(default="", metadata={"help": "write the report as JSON here"})

    def __post_init__(self):
        if not self.hf_dir:
            raise ValueError("--hf-dir is required (e.g. runs/smollm2-135m-instruct)")
        if self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")


def hf_logprobs(model, prompt_ids: list[int], continuations: list[list[int]]) -> list[float]:
    """Summed log p(continuation | prompt) for each continuation, from a transformers causal LM."""
    import torch

    out = []
    with torch.no_grad():
        last = None
        for cont in continuations:
            if len(cont) == 1:  # one token: the prompt's last logits are enough, computed once
                if last is None:
                    logits = model(torch.tensor([prompt_ids])).logits[0, -1]
                    last = torch.log_softmax(logits.double(), -1)
                out.append(float(last[cont[0]]))
                continue
            ids = torch.tensor([prompt_ids + cont])
            lp = torch.log_softmax(model(ids).logits[0].double(), -1)
            n = len(prompt_ids)
            out.append(float(sum(lp[n - 1 + j, t] for j, t in enumerate(cont))))
    return out


def check(config: HFCheckConfig, progress: bool = True) -> dict:
    import numpy as np
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lm.eval.mmlu import mmlu_examples
    from lm.eval.multiple_choice import evaluate_choices, pick
    from lm.eval.paths import default_eval_data_dir
    from lm.eval.tokens import encode
    from lm.interop import load_hf

    mmlu_dir = (Path(config.data_dir) if config.data_dir else default_eval_data_dir()) / "mmlu"
    examples = mmlu_examples(mmlu_dir, config.split, config.shots, config.mmlu_format, config.limit)
    params, model_config, tokenizer = load_hf(config.hf_dir, dtype="float32")
    ours = evaluate_choices(params, model_config, tokenizer, examples, config.batch_size, progress, "ours")

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    hf_tok = AutoTokenizer.from_pretrained(config.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(config.hf_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    rows, max_diff = [], 0.0
    for ex, rec in zip(examples, tqdm(ours["records"], disable=not progress, desc="transformers")):
        ids = hf_tok(ex.prompt, add_special_tokens=True)["input_ids"]
        conts = [hf_tok(c, add_special_tokens=False)["input_ids"] for c in ex.choices]
        same_ids = ids == encode(tokenizer, ex.prompt) and all(
            c == encode(tokenizer, t, add_special_tokens=False) for c, t in zip(conts, ex.choices))
        lps = hf_logprobs(model, ids, conts)
        hf_pred, hf_norm = pick(lps), pick(lps, [len(c.encode("utf-8")) for c in ex.choices])
        diff = float(np.max(np.abs(np.asarray(lps) - np.asarray(rec["logprobs"]))))
        max_diff = max(max_diff, diff)
        rows.append({"subject": rec["subject"], "index": rec["index"], "ours": rec["pred"], "hf": hf_pred,
                     "ours_norm": rec["pred_norm"], "hf_norm": hf_norm, "same_token_ids": same_ids,
                     "max_abs_logprob_diff": diff, "prompt_tokens": len(ids), "gold": rec["gold"]})
    agree = sum(r["ours"] == r["hf"] and r["ours_norm"] == r["hf_norm"] for r in rows)
    return {"n": len(rows), "agree": agree, "same_token_ids": sum(r["same_token_ids"] for r in rows),
            "max_abs_logprob_diff": max_diff, "ours_acc": ours["acc"],
            "hf_acc": sum(r["hf"] == r["gold"] for r in rows) / len(rows), "rows": rows,
            "config": dataclasses.asdict(config)}


def main(argv=None) -> int:
    from lm.config import add_dataclass_args, dataclass_from_args

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, HFCheckConfig)
    try:
        config = dataclass_from_args(HFCheckConfig, parser.parse_args(argv))
        report = check(config)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    letters = "ABCDEFGH"
    print("| subject | prompt tokens | ours | transformers | max abs log-prob diff |")
    print("|---|---:|:-:|:-:|---:|")
    for r in report["rows"]:
        print(f"| {r['subject']} | {r['prompt_tokens']} | {letters[r['ours']]} | {letters[r['hf']]} | "
              f"{r['max_abs_logprob_diff']:.2e} |")
    print(f"\nchosen answers agree on {report['agree']}/{report['n']} questions (acc and acc_norm picks); "
          f"token ids identical on {report['same_token_ids']}/{report['n']}; largest log-prob difference "
          f"{report['max_abs_logprob_diff']:.2e}; accuracy ours {report['ours_acc']:.3f}, "
          f"transformers {report['hf_acc']:.3f}")
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["agree"] == report["n"] and report["same_token_ids"] == report["n"] else 1


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
