"""GSM8K (Cobbe et al. 2021): grade-school maths word problems, scored by exact match of the final number.

    problems = load_gsm8k(data_dir / "gsm8k" / "test.jsonl")        # [{"question", "answer"}, ...]
    result = evaluate_gsm8k(params, config, tokenizer, data_dir / "gsm8k", shots=5, limit=200)

Plain prompts are k solved training problems, "Question: ...\\nAnswer: <worked
solution ending in #### N>", separated by blank lines, then "Question:
...\\nAnswer:"; generation stops at a blank line or "Question:". With
`chat=True` (instruction models) the same k problems become user/assistant
turns of the tokenizer's chat template and the question is the last user
turn. The final answer is pulled out of the completion and compared with the
gold number by the verifier (`lm.eval.verifiers`), the same one
that rewards RL training, so an evaluation number and a training reward
always agree on what counts as correct. `gold_bpb_records` scores instead the
reference solution's bits per byte after the same k-shot prompt: a
low-noise signal for models too small to solve the problems (as OLMo uses).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lm.eval.generation import generate_until
from lm.eval.scoring import score_continuations
from lm.eval.stats import accuracy_summary, bootstrap_resamples, mean_stderr
from lm.eval.tokens import encode
from lm.eval.verifiers import extract_answer, gsm8k_reward
from lm.inference.sampling import SamplingConfig
from lm.model import ModelConfig

PLAIN_STOP = ("Question:", "\n\n")
CHAT_STOP = ("Question:",)


def load_gsm8k(path: str | Path) -> list[dict]:
    """Problems from a JSONL file of {"question", "answer"} lines (the answer ends in "#### N")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GSM8K file {str(path)!r} not found; --data-dir must hold gsm8k/{{train,test}}.jsonl "
                                "(e.g. ../shared/data/corpora/a5_eval_data)")
    problems = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            if not {"question", "answer"} <= set(row) or "####" not in row["answer"]:
                raise ValueError(f"{path}:{i + 1}: expected {{'question', 'answer'}} with '#### N' in the answer")
            problems.append({"question": row["question"], "answer": row["answer"], "index": i})
    return problems


def gold_number(answer: str) -> str:
    """The number after '####' in a GSM8K reference solution, commas removed."""
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def plain_prompt(question: str, shots: list[dict]) -> str:
    solved = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    return f"{solved}Question: {question}\nAnswer:"


def chat_messages(question: str, shots: list[dict]) -> list[dict]:
    turns = []
    for s in shots:
        turns += [{"role": "user", "content": s["question"]}, {"role": "assistant", "content": s["answer"]}]
    return turns + [{"role": "user", "content": question}]


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` in the tokenizer's chat template, ending with the assistant's turn opener."""
    if not hasattr(tokenizer, "apply_chat_template"):
        raise ValueError("this tokenizer has no chat template; run without --chat (plain k-shot prompts)")
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return encode(tokenizer, out, add_special_tokens=False) if isinstance(out, str) else [int(t) for t in out]


def score(completion: str, gold: str) -> tuple[str | None, bool]:
    """(the number extracted from `completion` or None, whether it equals `gold`) by `lm.eval.verifiers`."""
    return extract_answer(completion), gsm8k_reward(completion, gold) == 1.0


def evaluate_gsm8k(params, config: ModelConfig, tokenizer, gsm8k_dir: str | Path, split: str = "test",
                   shots: int = 5, limit: int | None = None, chat: bool = False,
                   sampling: SamplingConfig = SamplingConfig(temperature=0.0, max_new_tokens=256),
                   batch_size: int = 8, progress: bool = False) -> dict:
    """Generate an answer for each of the first `limit` problems of `split`; returns
    {"accuracy", "accuracy_se", "accuracy_ci95", "n", "correct", "extracted", "records"}."""
    gsm8k_dir = Path(gsm8k_dir)
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    problems = load_gsm8k(gsm8k_dir / f"{split}.jsonl")[:limit]
    shot_pool = load_gsm8k(gsm8k_dir / "train.jsonl")[:shots] if shots else []
    if len(shot_pool) < shots:
        raise ValueError(f"only {len(shot_pool)} training problems for {shots} shots")
    records = gsm8k_records(params, config, tokenizer, problems, shot_pool, split, chat, sampling, batch_size,
                            progress)
    return {**summarize(records), "records": records}


def gsm8k_records(params, config: ModelConfig, tokenizer, problems: list[dict], shot_pool: list[dict], split: str,
                  chat: bool, sampling: SamplingConfig, batch_size: int = 8, progress: bool = False) -> list[dict]:
    """One record per problem: id, index, question, prompt, prediction, extracted, gold, correct."""
    if chat:
        prompts = [chat_ids(tokenizer, chat_messages(p["question"], shot_pool)) for p in problems]
        texts = [tokenizer.decode(p) for p in prompts]
    else:
        texts = [plain_prompt(p["question"], shot_pool) for p in problems]
        prompts = [encode(tokenizer, t) for t in texts]
    completions = generate_until(params, config, tokenizer, prompts, sampling, CHAT_STOP if chat else PLAIN_STOP,
                                 batch_size, progress=progress, desc=f"gsm8k {split}")
    records = []
    for p, text, completion in zip(problems, texts, completions):
        gold = gold_number(p["answer"])
        pred, correct = score(completion, gold)
        records.append({"id": f"gsm8k/{split}/{p['index']}", "index": p["index"], "question": p["question"],
                        "prompt": text, "prediction": completion, "extracted": pred, "gold": gold,
                        "correct": correct})
    return records


def gold_bpb_records(params, config: ModelConfig, tokenizer, problems: list[dict], shot_pool: list[dict],
                     split: str, batch_size: int = 8) -> list[dict]:
    """Bits per byte of each reference solution after the k-shot prompt (OLMo's low-noise signal for
    small models): -log2 p(" " + answer | prompt) / UTF-8 bytes of " " + answer."""
    requests, texts = [], []
    for p in problems:
        prompt = plain_prompt(p["question"], shot_pool)
        ctx = encode(tokenizer, prompt)
        answer = " " + p["answer"]
        whole = encode(tokenizer, prompt + answer)  # answer tokens as lm-evaluation-harness takes them
        cont = whole[len(ctx):] if whole[: len(ctx)] == ctx else encode(tokenizer, answer, add_special_tokens=False)
        requests.append((ctx, [cont]))
        texts.append((prompt, answer))
    scores = score_continuations(params, config, requests, batch_size)
    records = []
    for p, (prompt, answer), ((lp, n_tokens, _),) in zip(problems, texts, scores):
        n_bytes = len(answer.encode("utf-8"))
        records.append({"id": f"gsm8k/{split}/{p['index']}", "index": p["index"], "question": p["question"],
                        "prompt": prompt, "answer": answer, "nll": -lp, "tokens": n_tokens, "bytes": n_bytes,
                        "bits_per_byte": -lp / math.log(2) / n_bytes})
    return records


def summarize_bpb(records: list[dict]) -> dict:
    """{"bits_per_byte" (all answers' bits over all their bytes), "mean_bits_per_byte" (per answer) with its
    standard error and bootstrap 95% interval, "n", "tokens", "bytes"}."""
    bits = sum(r["nll"] for r in records) / math.log(2)
    n_bytes = sum(r["bytes"] for r in records)
    per = [r["bits_per_byte"] for r in records]
    idx = bootstrap_resamples(len(per))
    means = np.asarray(per)[idx].mean(axis=1)
    return {"bits_per_byte": bits / n_bytes, "mean_bits_per_byte": float(np.mean(per)),
            "mean_bits_per_byte_se": mean_stderr(per),
            "mean_bits_per_byte_ci95": [float(x) for x in np.percentile(means, [2.5, 97.5])],
            "n": len(records), "tokens": sum(r["tokens"] for r in records), "bytes": n_bytes}


def summarize(records: list[dict]) -> dict:
    """{"accuracy", "accuracy_se", "accuracy_ci95", "n", "correct", "extracted"} of per-problem records."""
    n = len(records)
    correct = sum(r["correct"] for r in records)
    err = accuracy_summary([r["correct"] for r in records]) if n else {"se": 0.0, "ci95": [0.0, 0.0]}
    return {"accuracy": correct / n if n else 0.0, "accuracy_se": err["se"], "accuracy_ci95": err["ci95"], "n": n,
            "correct": correct, "extracted": sum(r["extracted"] is not None for r in records)}
