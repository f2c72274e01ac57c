"""Evaluate a model (one of our runs, or an imported Hugging Face checkpoint) on a benchmark.

    python -m experiments.eval --run runs/default-tiny --task perplexity --data held_out.txt
    python -m experiments.eval --hf-dir DIR --task mmlu --shots 5 --split val
    python -m experiments.eval --hf-dir DIR --task gsm8k --limit 200 [--chat true]

Tasks: `perplexity` (a UTF-8 text or a .npy token file; sliding window of
the model's context, `--stride` new tokens per window; `--holdout 0.1` scores
only the last 10% of the tokens, the split `experiments.pretrain` holds out),
`mmlu` (k-shot from dev, `--mmlu-format letter|cloze`, per-subject and macro
accuracy) and `gsm8k` (k-shot from train, greedy unless `--temperature` > 0,
exact match by the alignment verifier). Benchmark data is read from
`--data-dir` (default `$LM_SHARED_DIR/data/corpora/a5_eval_data`, with
LM_SHARED_DIR defaulting to ../shared). Results go to `--out` (default
runs/eval/MODEL-TASK): results.json, records.jsonl (prompt, prediction, gold,
correct for every example) and results.md, which is also printed. From a
notebook:

    from experiments.eval import EvalConfig, evaluate
    result = evaluate(EvalConfig(hf_dir=DIR, task="mmlu", limit=50))      # {"metrics", "records", ...}
    result = evaluate(EvalConfig(task="mmlu"), model=(params, model_config, tokenizer))
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from lm.cli_env import prepare_process

TASKS = ("perplexity", "mmlu", "gsm8k", "gsm8k_bpb", "alpaca_eval", "simple_safety_tests")
DATA_FOLDER = {"gsm8k_bpb": "gsm8k"}  # tasks reading another task's files


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    task: str = dataclasses.field(default="", metadata={"help": f"one of {TASKS}"})
    run: str = dataclasses.field(default="", metadata={"help": "run directory of our own model (runs/NAME)"})
    hf_dir: str = dataclasses.field(default="", metadata={"help": "a Hugging Face checkpoint folder (lm.interop)"})
    step: int = dataclasses.field(default=-1, metadata={"help": "checkpoint step of --run (-1: latest)"})
    dtype: str = "float32"
    data_dir: str = dataclasses.field(default="", metadata={"help": "folder with mmlu/ and gsm8k/ (default: shared)"})
    data: str = dataclasses.field(default="", metadata={"help": "perplexity: a text file or a .npy token file"})
    holdout: float = dataclasses.field(default=0.0, metadata={"help": "perplexity: score the last fraction (0: all)"})
    stride: int = dataclasses.field(default=0, metadata={"help": "perplexity: new tokens per window (0: context/2)"})
    context: int = dataclasses.field(default=0, metadata={"help": "perplexity: window length (0: the model's)"})
    bos: str = dataclasses.field(default="<|endoftext|>", metadata={
        "help": "perplexity: special token put before a text, if the tokenizer has it"})
    split: str = dataclasses.field(default="", metadata={"help": "mmlu: dev|val|test (val); gsm8k: test|train (test)"})
    shots: int = 5
    limit: int | None = dataclasses.field(default=None, metadata={"help": "evaluate only the first N examples"})
    mmlu_format: str = dataclasses.field(default="letter", metadata={"help": "letter (A/B/C/D) or cloze"})
    subjects: tuple[str, ...] = dataclasses.field(default=(), metadata={"help": "mmlu: only these subjects"})
    chat: bool = dataclasses.field(default=False, metadata={"help": "gsm8k: use the tokenizer's chat template"})
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: str = dataclasses.field(default="8", metadata={
        "help": "rows per batch, or auto: the largest that fits --memory-budget-gb (found once, cached)"})
    memory_budget_gb: float = dataclasses.field(default=0.0, metadata={
        "help": "for --batch-size auto (0: 80% of an accelerator's memory, a quarter of free RAM on CPU)"})
    chunk: int = dataclasses.field(default=64, metadata={"help": "examples per chunk appended to partial.jsonl"})
    resume: bool = dataclasses.field(default=True, metadata={
        "help": "reuse records in OUT/partial.jsonl from an earlier (killed) run of the same model and settings"})
    train_tokens: str = dataclasses.field(default="", metadata={
        "help": "contamination report against these training tokens (*.npy under a run or token folder)"})
    ngram: int = dataclasses.field(default=13, metadata={"help": "contamination: words per n-gram"})
    ngram_cache: str = dataclasses.field(default="runs/_cache/ngram_index", metadata={
        "help": "contamination: where n-gram indexes of training corpora are kept"})
    out: str = dataclasses.field(default="", metadata={"help": "output folder (default runs/eval/MODEL-TASK)"})
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "batch_size", str(self.batch_size))
        if self.batch_size != "auto" and not (self.batch_size.isdigit() and int(self.batch_size) >= 1):
            raise ValueError(f"--batch-size must be a positive number or auto, got {self.batch_size!r}")
        if self.chunk < 1 or self.memory_budget_gb < 0 or self.ngram < 1:
            raise ValueError("--chunk and --ngram must be >= 1 and --memory-budget-gb >= 0")
        if self.train_tokens and self.task not in ("mmlu", "gsm8k"):
            raise ValueError("--train-tokens reports contamination (and clean-subset accuracy) for mmlu and gsm8k")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)} with --task")
        if bool(self.run) == bool(self.hf_dir):
            raise ValueError("give exactly one model: --run runs/NAME (ours) or --hf-dir DIR (Hugging Face)")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"--limit must be a positive number of examples, got {self.limit!r}; "
                             "leave it out to evaluate everything")
        if self.shots < 0 or self.max_new_tokens < 1 or self.stride < 0 or self.context < 0:
            raise ValueError("--shots, --stride and --context must be >= 0, --batch-size and --max-new-tokens >= 1")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"--holdout must be in [0, 1), got {self.holdout}")
        if self.mmlu_format not in ("letter", "cloze"):
            raise ValueError(f"--mmlu-format must be letter or cloze, got {self.mmlu_format!r}")
        if self.task == "perplexity" and not self.data:
            raise ValueError("--task perplexity needs --data FILE (UTF-8 text, or a .npy array of token ids)")
        allowed = {"mmlu": ("dev", "val", "test"), "gsm8k": ("test", "train"),
                   "gsm8k_bpb": ("test", "train")}.get(self.task, ("",))
        if self.split and self.split not in allowed:
            raise ValueError(f"--split {self.split!r} is not one of {allowed} for {self.task}")

    @property
    def resolved_split(self) -> str:
        return self.split or {"mmlu": "val", "gsm8k": "test", "gsm8k_bpb": "test"}.get(self.task, "")

    @property
    def model_name(self) -> str:
        return Path(self.run or self.hf_dir).resolve().name

    def data_path(self) -> Path:
        """The file or folder this task reads; FileNotFoundError (before any model is loaded) if absent."""
        from lm.eval.paths import default_eval_data_dir

        if self.task == "perplexity":
            path = Path(self.data)
        else:
            root = Path(self.data_dir) if self.data_dir else default_eval_data_dir()
            path = root / DATA_FOLDER.get(self.task, self.task)
        if not path.exists():
            hint = ("" if self.task == "perplexity" else
                    " (pass --data-dir pointing at a5_eval_data/, or set LM_SHARED_DIR to the shared/ folder)")
            raise FileNotFoundError(f"{self.task} data not found at {str(path)!r}{hint}")
        return path


def load_model(config: EvalConfig):
    """(params, ModelConfig, tokenizer) of --run or --hf-dir."""
    if config.run:
        from lm.inference.load import load_run

        return load_run(config.run, None if config.step < 0 else config.step)
    from lm.interop import load_hf

    if not Path(config.hf_dir).is_dir():
        raise FileNotFoundError(f"--hf-dir {config.hf_dir!r} is not a folder")
    return load_hf(config.hf_dir, dtype=config.dtype)


def _perplexity_ids(config: EvalConfig, tokenizer):
    """(token ids to score, bytes of the scored text) for --data, --holdout and --bos."""
    import numpy as np

    from lm.eval.tokens import encode, text_bytes
    from lm.tokenizer.pretokenize import read_text

    path = config.data_path()
    if path.suffix == ".npy":
        ids = np.load(path, mmap_mode="r")
        ids = np.asarray(ids[int(len(ids) * (1 - config.holdout)):] if config.holdout else ids, np.int64)
        bos = []
    else:
        ids = np.asarray(encode(tokenizer, read_text(path), add_special_tokens=False), np.int64)
        ids = ids[int(len(ids) * (1 - config.holdout)):] if config.holdout else ids
        bos_id = _token_id(tokenizer, config.bos)
        bos = [] if bos_id is None else [bos_id]
    ids = np.concatenate([np.asarray(bos, np.int64), ids])
    return ids, None if tokenizer is None else text_bytes(tokenizer, ids[1:])


def _token_id(tokenizer, token: str) -> int | None:
    """The id of special token `token`, or None if empty or unknown to the tokenizer."""
    if not token:
        return None
    if token in getattr(tokenizer, "special_ids", {}):
        return tokenizer.special_ids[token]
    return tokenizer.token_id(token) if hasattr(tokenizer, "token_id") else None


def prompt_settings(config: EvalConfig) -> dict:
    """Everything besides the model and the example that changes an example's record."""
    generation = ("max_new_tokens", "temperature", "top_p", "seed")
    keep = {"mmlu": ("shots", "mmlu_format"), "gsm8k": ("shots", "chat", *generation), "gsm8k_bpb": ("shots",),
            "alpaca_eval": generation, "simple_safety_tests": generation}[config.task]
    return {k: getattr(config, k) for k in keep}


def _batch_size(config: EvalConfig, params, model_config, requests, fp: str, out_dir: Path | None) -> int:
    """--batch-size, or for auto the largest that fits the budget at the widest of `requests()`."""
    if config.batch_size != "auto":
        return int(config.batch_size)
    from lm.eval.memory import auto_batch_size, default_budget, widest

    requests, shared = requests()

    budget = int(config.memory_budget_gb * 2 ** 30) or default_budget()
    cache = (out_dir.parent if out_dir else Path("runs") / "eval") / "batch_size_cache.json"
    rows = auto_batch_size(params, model_config, widest(requests, shared), budget, cache, f"{fp}-{config.task}")
    print(f"--batch-size auto: {rows} rows fit {budget / 2 ** 30:.1f} GiB (cached in {cache})", file=sys.stderr)
    return rows


def _mmlu(config: EvalConfig, params, model_config, tokenizer, data: Path, fp: str, log, out_dir, on_chunk):
    from lm.eval.mmlu import LETTERS, mmlu_examples, summarize
    from lm.eval.multiple_choice import choice_requests, evaluate_choices
    from lm.eval.resume import record_key, resumable

    split = config.resolved_split
    examples = mmlu_examples(data, split, config.shots, config.mmlu_format, config.limit, config.subjects)
    settings = prompt_settings(config)
    keys = [record_key(fp, "mmlu", split, ex.meta["id"], settings) for ex in examples]
    pending = [i for i, k in enumerate(keys) if log is None or k not in log]
    encoded: dict[int, tuple] = {}  # example -> (request, shared length), tokenized once

    def requests_of(idx):
        todo = [i for i in idx if i not in encoded]
        if todo:
            reqs, shared = choice_requests(tokenizer, [examples[i] for i in todo])
            encoded.update(zip(todo, zip(reqs, shared)))
        return [encoded[i][0] for i in idx], [encoded[i][1] for i in idx]

    batch_size = _batch_size(config, params, model_config, lambda: requests_of(pending), fp,
                             out_dir) if pending else 1
    prefix_cache: dict = {}  # chunks cut a subject in two: its k-shot header is read once all the same

    def compute(idx, start):
        r = evaluate_choices(params, model_config, tokenizer, [examples[i] for i in idx], batch_size,
                             encoded=requests_of(idx), prefix_cache=prefix_cache)
        for i in idx:
            encoded.pop(i, None)
        for rec in r["records"]:
            rec["pred_letter"] = LETTERS[rec["pred"]]
        return r["records"]

    order = sorted(range(len(examples)), key=lambda i: (examples[i].meta["subject"], i))  # a chunk: few subjects
    records = resumable(keys, compute, log, config.chunk, order, on_chunk, config.progress, f"mmlu {split}")
    return summarize(records), records


def _gsm8k(config: EvalConfig, params, model_config, tokenizer, data: Path, fp: str, log, out_dir, on_chunk):
    from lm.eval.gsm8k import gsm8k_records, load_gsm8k, summarize
    from lm.eval.resume import record_key, resumable
    from lm.inference.sampling import SamplingConfig

    split = config.resolved_split
    problems = load_gsm8k(data / f"{split}.jsonl")[: config.limit]
    shots = load_gsm8k(data / "train.jsonl")[: config.shots] if config.shots else []
    if len(shots) < config.shots:
        raise ValueError(f"only {len(shots)} training problems for {config.shots} shots")
    settings = prompt_settings(config)
    keys = [record_key(fp, "gsm8k", split, f"gsm8k/{split}/{p['index']}", settings) for p in problems]
    batch_size = 8 if config.batch_size == "auto" else int(config.batch_size)  # decoding: no estimate yet

    def compute(idx, start):
        sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p,
                                  max_new_tokens=config.max_new_tokens, seed=config.seed + start)
        return gsm8k_records(params, model_config, tokenizer, [problems[i] for i in idx], shots, split,
                             config.chat, sampling, batch_size)

    chunk = -(-config.chunk // batch_size) * batch_size  # whole batches, so a chunk's seeds never overlap the next
    records = resumable(keys, compute, log, chunk, None, on_chunk, config.progress, f"gsm8k {split}")
    return summarize(records), records


def _gsm8k_bpb(config: EvalConfig, params, model_config, tokenizer, data: Path, fp: str, log, out_dir, on_chunk):
    from lm.eval.gsm8k import gold_bpb_records, load_gsm8k, summarize_bpb
    from lm.eval.resume import record_key, resumable

    split = config.resolved_split
    problems = load_gsm8k(data / f"{split}.jsonl")[: config.limit]
    shots = load_gsm8k(data / "train.jsonl")[: config.shots] if config.shots else []
    keys = [record_key(fp, "gsm8k_bpb", split, f"gsm8k/{split}/{p['index']}", prompt_settings(config))
            for p in problems]
    batch_size = 8 if config.batch_size == "auto" else int(config.batch_size)

    def compute(idx, start):
        return gold_bpb_records(params, model_config, tokenizer, [problems[i] for i in idx], shots, split, batch_size)

    records = resumable(keys, compute, log, config.chunk, None, on_chunk, config.progress, f"gsm8k bpb {split}")
    return summarize_bpb(records), records


def _open_ended(config: EvalConfig, params, model_config, tokenizer, data: Path, fp: str, log, out_dir, on_chunk):
    from lm.eval.open_ended import generate_records, load_alpaca_eval, load_simple_safety_tests, summarize
    from lm.eval.resume import record_key, resumable
    from lm.inference.sampling import SamplingConfig

    load = load_alpaca_eval if config.task == "alpaca_eval" else load_simple_safety_tests
    prompts = load(data)[: config.limit]
    keys = [record_key(fp, config.task, "", p["id"], prompt_settings(config)) for p in prompts]
    batch_size = 8 if config.batch_size == "auto" else int(config.batch_size)

    def compute(idx, start):
        sampling = SamplingConfig(temperature=config.temperature, top_p=config.top_p,
                                  max_new_tokens=config.max_new_tokens, seed=config.seed + start)
        return generate_records(params, model_config, tokenizer, [prompts[i] for i in idx], sampling,
                                config.model_name, batch_size)

    chunk = -(-config.chunk // batch_size) * batch_size
    records = resumable(keys, compute, log, chunk, None, on_chunk, config.progress, config.task)
    return summarize(records), records


def _contamination(config: EvalConfig, tokenizer, records: list[dict]) -> dict:
    """Flag each record whose question shares a word n-gram with --train-tokens; the report on the clean subset."""
    from lm.eval.contamination import contaminated, contamination_report, corpus_index, token_files

    index = corpus_index(token_files(config.train_tokens), tokenizer, config.ngram, config.ngram_cache or None)
    flags = contaminated(index, [r["question"] for r in records], config.ngram)
    for r, f in zip(records, flags):
        r["contaminated"] = f
    return {"train_tokens": config.train_tokens, **contamination_report(records, flags, config.ngram)}


def evaluate(config: EvalConfig, model=None, out_dir: str | Path | None = None, on_chunk=None) -> dict:
    """Run the evaluation; returns {"task", "model", "config", "metrics", "records", "seconds", ...}.

    `model` = (params, ModelConfig, tokenizer) skips loading --run / --hf-dir. With `out_dir` (the command
    line passes --out), per-example records go to OUT/partial.jsonl as they are computed, and with
    --resume those an earlier run of the same model and settings left there are reused.
    on_chunk(examples done) is called after each appended chunk.
    """
    import jax

    from lm.config import to_dict
    from lm.eval import perplexity
    from lm.eval.resume import RecordLog, fingerprint

    data = config.data_path()  # fail on a missing path before the (slow) model load
    params, model_config, tokenizer = model if model is not None else load_model(config)
    t0 = time.perf_counter()
    split = config.resolved_split
    records = []
    fp = fingerprint(params, model_config)
    out_dir = Path(out_dir) if out_dir else None
    log = None
    if out_dir is not None:
        if not config.resume and (out_dir / "partial.jsonl").exists():
            (out_dir / "partial.jsonl").unlink()
        log = RecordLog(out_dir / "partial.jsonl")
    if config.task == "perplexity":
        ids, n_bytes = _perplexity_ids(config, tokenizer)
        bs = 8 if config.batch_size == "auto" else int(config.batch_size)
        metrics = perplexity(params, model_config, ids, config.stride or None, bs, n_bytes,
                             config.progress, config.context or None)
    else:
        task = {"mmlu": _mmlu, "gsm8k": _gsm8k, "gsm8k_bpb": _gsm8k_bpb, "alpaca_eval": _open_ended,
                "simple_safety_tests": _open_ended}[config.task]
        metrics, records = task(config, params, model_config, tokenizer, data, fp, log, out_dir, on_chunk)
        if config.train_tokens:
            metrics["contamination"] = _contamination(config, tokenizer, records)
    seconds = time.perf_counter() - t0
    # How many records this run computed, and how many it took from an earlier (killed) run's log.
    computed = log.appended if log is not None else len(records)
    return {"task": config.task, "model": config.model_name, "model_fingerprint": fp, "split": split,
            "metrics": metrics, "config": to_dict(config), "model_config": to_dict(model_config),
            "seconds": seconds, "examples_computed": computed, "examples_resumed": len(records) - computed,
            "jax": jax.__version__, "device": str(jax.devices()[0]), "records": records}


def default_out(config: EvalConfig) -> Path:
    suffix = f"-{config.resolved_split}" if config.resolved_split else ""
    return Path("runs") / "eval" / f"{config.model_name}-{config.task}{suffix}"


def main(argv=None) -> int:
    from lm.config import add_dataclass_args, dataclass_from_args
    from lm.eval.report import markdown_table, write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, EvalConfig)
    args = parser.parse_args(argv)
    try:
        config = dataclass_from_args(EvalConfig, args)
        out_dir = Path(config.out) if config.out else default_out(config)
        result = evaluate(config, out_dir=out_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = write_results(result, out_dir)
    if config.task == "alpaca_eval":
        from lm.eval.open_ended import alpaca_eval_outputs

        (out / "alpaca_eval_outputs.json").write_text(json.dumps(alpaca_eval_outputs(result["records"]), indent=1))
    print(markdown_table(result))
    if result["examples_resumed"]:
        print(f"[resumed: {result['examples_resumed']} examples from {out}/partial.jsonl, "
              f"{result['examples_computed']} computed now]", file=sys.stderr)
    print(f"[{result['seconds']:.1f} s; results in {out}/results.json, records.jsonl, results.md]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
