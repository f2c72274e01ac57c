"""Where the time of an MMLU run goes, and what the full validation split should take.

    python -m benchmarks.eval_mmlu --hf-dir runs/smollm2-135m-instruct --subjects anatomy,astronomy \\
        --batch-sizes 8,16 --repeats 2 [--write]

Scores the given subjects (5-shot, letter format, the CLI's chunks of 64 in
subject order) once per variant, the variants interleaved and repeated, with a
fresh compilation cache each time (as a new process has). Each scoring program
call is timed to completion and put in one phase: the k-shot prefix pass
(`_read_prefix`), the per-question rest pass (`_read_rows`, which also gives
the last logits a letter answer needs), the continuation pass
(`_score_choices`), or compilation (a program's first call at a new shape
less a second call, whose time goes to its phase); tokenization and host work
(batching, Python) are the rest. The full split is extrapolated component by
component: seconds per padded token of the prefix and rest passes times the
split's padded tokens (from its token lengths, grouped as the scorer groups
them), seconds per compile times the split's count of program shapes,
tokenization and host time per question times 1,531 questions. The machine
is shared: the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time

import jax
import numpy as np

from lm.cli_env import prepare_process

SECTION = "eval_mmlu_speed"


def _signature(args, kwargs) -> tuple:
    leaves = jax.tree.leaves((args[1:], {k: v for k, v in kwargs.items() if k != "config"}))
    return tuple((getattr(x, "shape", ()), str(getattr(x, "dtype", type(x).__name__))) for x in leaves)


class Profiler:
    """Wraps the scorer's jitted programs: each call is blocked on and timed, and charged to its phase."""

    PHASE = {"_read_prefix": "prefix pass", "_read_rows": "rest pass", "_score_choices": "continuations"}

    def __init__(self):
        from lm.eval import scoring

        self.programs = scoring._programs()
        self.original = dict(self.programs)
        self.reset()

    def reset(self):
        self.seconds = collections.Counter()
        self.calls = collections.Counter()
        self.tokens = collections.Counter()  # padded tokens of steady (not first) calls
        self.seen: set = set()
        self.extra = 0.0  # the second runs of first calls, not part of the run's own time

    def __enter__(self):
        for name, fn in self.original.items():
            self.programs[name] = self._wrap(name, fn)
        return self

    def __exit__(self, *exc):
        self.programs.update(self.original)

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            sig = (name, _signature(args, kwargs))
            phase = self.PHASE[name]
            t = time.perf_counter()
            out = jax.block_until_ready(fn(*args, **kwargs))
            dt = time.perf_counter() - t
            if sig not in self.seen:  # compile + run: run it again to tell the two apart
                self.seen.add(sig)
                t = time.perf_counter()
                out = jax.block_until_ready(fn(*args, **kwargs))
                again = time.perf_counter() - t
                self.seconds["compile"] += dt - again
                self.calls["compile"] += 1
                self.extra += again
                dt = again
            if name != "_score_choices":
                self.tokens[phase] += int(np.prod(np.shape(args[1])))
            self.seconds[phase] += dt
            self.calls[phase] += 1
            return out
        return timed


def run_variant(params, config, tokenizer, examples, batch_size: int, chunk: int, prefix_cache: bool,
                profiler: Profiler) -> dict:
    """Score `examples` as experiments.eval's MMLU task does; returns the phase seconds and counts."""
    from lm.eval.multiple_choice import choice_requests, evaluate_choices

    jax.clear_caches()
    profiler.reset()
    t0 = time.perf_counter()
    t = time.perf_counter()
    encoded = choice_requests(tokenizer, examples)
    tokenize = time.perf_counter() - t
    cache: dict | None = {} if prefix_cache else None
    preds = []
    with profiler:
        for s in range(0, len(examples), chunk):
            part = (encoded[0][s: s + chunk], encoded[1][s: s + chunk])
            r = evaluate_choices(params, config, tokenizer, examples[s: s + chunk], batch_size, encoded=part,
                                 prefix_cache=cache)
            preds += [(rec["pred"], rec["logprobs"]) for rec in r["records"]]
    total = time.perf_counter() - t0 - profiler.extra
    seconds = dict(profiler.seconds)
    seconds["tokenize"] = tokenize
    seconds["host (batching, Python)"] = total - tokenize - sum(profiler.seconds.values())
    return {"total": total, "seconds": seconds, "calls": dict(profiler.calls), "tokens": dict(profiler.tokens),
            "preds": preds}


def split_lengths(tokenizer, data_dir, split: str = "val") -> list[tuple[str, int, int]]:
    """(subject, shared prefix tokens, own rest tokens) of every question of the split, in subject order."""
    from lm.eval.mmlu import mmlu_examples
    from lm.eval.multiple_choice import choice_requests

    examples = sorted(mmlu_examples(data_dir / "mmlu", split, 5, "letter"), key=lambda e: e.meta["subject"])
    requests, shared = choice_requests(tokenizer, examples)
    return [(e.meta["subject"], n, len(ctx) - n) for e, (ctx, _), n in zip(examples, requests, shared)]


def split_shapes(lengths, batch_size: int, chunk: int) -> dict:
    """Padded prefix / rest tokens, prefix passes (once per chunk as before, once per subject now) and program
    shapes (before: continuation programs per context shape; now: per row count) of the split, as the scorer
    groups its questions (from the token lengths alone)."""
    from lm.eval.scoring import _batches, _prefix_width, _round_up

    prefix_width = {s: _prefix_width(n) for s, n, _ in lengths}
    rest = collections.defaultdict(collections.Counter)
    for s, _, own in lengths:
        rest[s][_round_up(own, 2)] += 1
    rest_tokens, rows_shapes, choice_shapes = 0, set(), set()
    for s, widths in rest.items():
        for w, n in widths.items():
            rows = _batches(n, batch_size)
            rest_tokens += sum(rows) * w
            rows_shapes |= {(prefix_width[s], w, r) for r in rows}
            choice_shapes |= set(rows)
    chunks = [{s for s, _, _ in lengths[i: i + chunk]} for i in range(0, len(lengths), chunk)]
    prefixes = set(prefix_width.values())
    return {"questions": len(lengths), "subjects": len(prefix_width), "rest_tokens": rest_tokens,
            "prefix_tokens": sum(prefix_width.values()), "prefix_passes_per_chunk": sum(map(len, chunks)),
            "prefix_tokens_per_chunk": sum(prefix_width[s] for c in chunks for s in c),
            "shapes": len(prefixes) + len(rows_shapes) + len(choice_shapes),
            "shapes_before": len(prefixes) + 2 * len(rows_shapes)}


def extrapolate(measured: dict, n_questions: int, full: dict, now: bool) -> dict:
    """Full-split seconds by component from one measured run (`now`: prefix once per subject, the current
    program shapes; else once per chunk and a continuation program per context shape, as before)."""
    sec, tok, calls = measured["seconds"], measured["tokens"], measured["calls"]
    rest_rate = sec.get("rest pass", 0) / max(tok.get("rest pass", 0), 1)
    prefix_rate = sec["prefix pass"] / tok["prefix pass"] if tok.get("prefix pass") else rest_rate
    compile_each = sec.get("compile", 0) / max(calls.get("compile", 0), 1)
    scale = full["questions"] / n_questions
    out = {"prefix pass": prefix_rate * full["prefix_tokens" if now else "prefix_tokens_per_chunk"],
           "rest pass": rest_rate * full["rest_tokens"],
           "continuations": sec.get("continuations", 0) * scale,
           "compile": compile_each * full["shapes" if now else "shapes_before"],
           "tokenize": sec["tokenize"] * scale,
           "host (batching, Python)": max(sec["host (batching, Python)"], 0) * scale}
    out["total"] = sum(out.values())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hf-dir", default="runs/smollm2-135m-instruct")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--subjects", default="anatomy,college_biology")
    parser.add_argument("--batch-sizes", default="8")
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", action="store_true", help=f"write the {SECTION} section of RESULTS.md")
    args = parser.parse_args(argv)

    from pathlib import Path

    from lm.eval.mmlu import mmlu_examples
    from lm.eval.paths import default_eval_data_dir
    from lm.interop import load_hf

    data_dir = Path(args.data_dir) if args.data_dir else default_eval_data_dir()
    params, config, tokenizer = load_hf(args.hf_dir)
    params = jax.device_put(params)
    subjects = tuple(args.subjects.split(","))
    examples = sorted(mmlu_examples(data_dir / "mmlu", "val", 5, "letter", only=subjects),
                      key=lambda e: e.meta["subject"])
    variants = [int(b) for b in args.batch_sizes.split(",")]
    profiler = Profiler()
    results: dict = collections.defaultdict(list)
    loads = []
    for rep in range(args.repeats):
        for b in variants:
            loads.append(os.getloadavg()[0])
            r = run_variant(params, config, tokenizer, examples, b, args.chunk, True, profiler)
            results[b].append(r)
            print(f"repeat {rep} batch {b}: {r['total']:.1f} s (load {loads[-1]:.1f})",
                  file=sys.stderr, flush=True)
    def logprobs(r):
        return np.array([lp for _, lp in r["preds"]])

    same = all(r["preds"] == rs[0]["preds"] for rs in results.values() for r in rs)  # repeats: deterministic
    reference = logprobs(results[variants[0]][0])
    across = max(float(np.abs(logprobs(rs[0]) - reference).max()) for rs in results.values())
    picks = sum(p == q for (p, _), (q, _) in zip(*(rs[0]["preds"] for rs in (results[variants[0]],
                                                                           results[variants[-1]]))))

    phases = ["prefix pass", "rest pass", "continuations", "compile", "tokenize",
              "host (batching, Python)"]
    from benchmarks.results import commit, machine_description, markdown_table, write_section

    rows, full_rows = [], []
    lengths = split_lengths(tokenizer, data_dir)
    fulls = {b: split_shapes(lengths, b, args.chunk) for b in variants}
    for b, rs in results.items():
        med = {p: statistics.median(r["seconds"].get(p, 0.0) for r in rs) for p in phases}
        total = statistics.median(r["total"] for r in rs)
        calls = rs[0]["calls"]
        rows.append([b, *(f"{med[p]:.1f} ({calls[p]})" if p in calls else f"{med[p]:.1f}" for p in phases),
                     f"{total:.1f}", f"{total / len(examples):.2f}"])
        for now in (False, True):
            est = [extrapolate(r, len(examples), fulls[b], now) for r in rs]
            code = "now" if now else "before 7d35e3d (prefix per chunk, continuation program per context shape)"
            full_rows.append([b, code,
                              *(f"{statistics.median(e[p] for e in est) / 60:.1f}" for p in [*phases, "total"])])
    f = fulls[variants[0]]
    body = "\n".join([
        f"## MMLU speed (`python -m benchmarks.eval_mmlu {' '.join(argv if argv is not None else sys.argv[1:])}`)",
        "",
        f"Machine: {machine_description()}, jax {jax.__version__}; commit {commit()}. SmolLM2-135M-Instruct "
        f"(float32), 5-shot letter format, chunks of {args.chunk} questions in subject order as "
        f"`experiments.eval` runs them. Subjects {', '.join(subjects)} ({len(examples)} questions); "
        f"{args.repeats} interleaved repeats, medians; load average at the starts "
        f"{min(loads):.1f}-{max(loads):.1f} on the shared machine. Each program call is blocked on and timed "
        "(seconds, and calls in brackets); a fresh compilation cache per run. Log-probs identical across "
        f"repeats: {'yes' if same else 'NO'}; largest difference between batch sizes {across:.1e} "
        f"(0 when scores are batch-invariant); picks equal at batch {variants[0]} and {variants[-1]}: "
        f"{picks}/{len(examples)}.",
        "",
        markdown_table(["batch", *(f"{p} s" for p in phases), "total s",
                        "s / question"], rows),
        "",
        f"Extrapolated to the full validation split ({f['questions']} questions, {f['subjects']} subjects): "
        f"{f['rest_tokens']:,} padded rest tokens at batch {variants[0]}, {f['prefix_tokens']:,} padded "
        f"prefix tokens read once per subject ({f['prefix_tokens_per_chunk']:,} in "
        f"{f['prefix_passes_per_chunk']} passes when read once per chunk), {f['shapes']} program shapes "
        f"({f['shapes_before']} before). Minutes per component, from each repeat's rates, medians:",
        "",
        markdown_table(["batch", "code", *phases, "total min"], full_rows),
    ])
    print(body)
    if args.write:
        write_section(SECTION, body)
    return 0 if same else 1


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
