"""GRPO rollout time: each prompt prefilled once for its G samples against prefilling every repeated prompt.

    python -m benchmarks.rollout                 # both scenarios, writes the `rollout` section of RESULTS.md
    python -m benchmarks.rollout --quick         # fewer repeats, nothing written

Scenarios (random weights: the time does not depend on them, and both paths draw the same samples,
which every repeat checks):
  arithmetic   the align_arithmetic pipeline's GRPO step: its model (d_model 64, 2 layers, byte
               vocabulary), 16 prompts x G = 16, up to 5 new tokens, temperature 0.7.
  gsm8k-4shot  GSM8K questions after a 4-shot prefix of solved training problems (`lm.eval.gsm8k`'s
               plain prompt, GPT-2 BPE, about 900 tokens), 4 prompts x G = 8, up to 32 new tokens, on a
               4-layer d_model-128 model with a 1,024-token context. Reads GSM8K and the GPT-2 tokenizer
               files from the shared folder (`LM_SHARED_DIR`); skipped with a message without them.
  --hf-dir DIR the same 4-shot prompts on a real checkpoint (its tokenizer, about 640 tokens), 2 prompts
               x G = 4, up to 16 new tokens: `python -m benchmarks.rollout --hf-dir runs/smollm2-135m-instruct`.
Each repeat times both paths back to back, alternating which goes first; the table gives medians
and the ratio of the best times (the least disturbed by other load). "Of which prefill" times the
old path's prefill alone (`lm.inference.generate.start` on the n * G rows); sharing saves (G - 1) / G
of it, which gives the expected speed-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import jax

from benchmarks.results import machine_description, markdown_table, write_section, commit as results_commit
from lm.align.rollout import rollout
from lm.align.tasks import ARITHMETIC, task_problems
from lm.cli_env import prepare_process
from lm.eval.gsm8k import load_gsm8k, plain_prompt
from lm.eval.paths import shared_dir
from lm.inference import SamplingConfig
from lm.inference.generate import start
from lm.interop import load_hf
from lm.model import ModelConfig, init
from lm.tokenizer import Tokenizer, load_gpt2_tokenizer

REPO = Path(__file__).resolve().parents[1]

EOT = "<|endoftext|>"


def arithmetic_scenario():
    model = ModelConfig(vocab_size=257, context_length=32, d_model=64, n_layers=2, n_heads=4, d_ff=256)
    tok = Tokenizer({i: bytes([i]) for i in range(256)}, [], [EOT])
    prompts = [ARITHMETIC.prompt_ids(tok, p) for p in task_problems(ARITHMETIC, "train", 16)]
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=5, stop_ids=(256,))
    return model, prompts, 16, sampling, None


def gsm8k_files():
    corpora = shared_dir() / "data" / "corpora"
    files = [corpora / "a5_eval_data" / "gsm8k" / "train.jsonl", corpora / "gpt2_vocab.json",
             corpora / "gpt2_merges.txt"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"gsm8k scenarios skipped: missing {missing} (set LM_SHARED_DIR)")
        return None
    return files


def gsm8k_scenario(files):
    tok = load_gpt2_tokenizer(files[1], files[2], [EOT])
    train = load_gsm8k(files[0])
    prompts = [tok.encode(plain_prompt(p["question"], train[:4])) for p in train[4:8]]
    model = ModelConfig(vocab_size=len(tok.vocab), context_length=1024, d_model=128, n_layers=4, n_heads=4, d_ff=512)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=32, stop_ids=(tok.special_ids[EOT],))
    return model, prompts, 8, sampling, None


def hf_scenario(files, hf_dir: str):
    """The same 4-shot prompts for a real checkpoint (SmolLM2-135M-Instruct): 2 prompts x G = 4."""
    params, model, tok = load_hf(hf_dir)
    train = load_gsm8k(files[0])
    prompts = [tok.encode(plain_prompt(p["question"], train[:4])) for p in train[4:6]]
    stop = tok.special_ids.get("<|im_end|>", tok.special_ids.get(EOT))
    return model, prompts, 4, SamplingConfig(temperature=1.0, max_new_tokens=16, stop_ids=(stop,)), params


def run(name, scenario, repeats: int) -> list:
    model, prompts, group, sampling, params = scenario
    if params is None:
        params = jax.jit(init, static_argnums=0)(model, jax.random.PRNGKey(0))
    times = {True: [], False: [], "prefill": []}
    repeated = [p for p in prompts for _ in range(group)]
    for r in range(repeats + 1):  # repeat 0 compiles both paths and is not counted
        s = SamplingConfig(**{**sampling.__dict__, "seed": r})
        out = {}
        for shared in ((True, False) if r % 2 else (False, True)):
            t0 = time.perf_counter()
            out[shared] = rollout(params, model, prompts, group, s, share_prefill=shared)
            if r:
                times[shared].append(time.perf_counter() - t0)
        t0 = time.perf_counter()  # the old path's prefill (and first token) alone: the share it can save
        jax.block_until_ready(start(params, model, repeated, s))
        if r:
            times["prefill"].append(time.perf_counter() - t0)
        if out[True]["responses"] != out[False]["responses"]:
            raise AssertionError(f"{name}: prefill-once samples differ from the repeated-prompt path (seed {r})")
    before, after = statistics.median(times[False]), statistics.median(times[True])
    best = min(times[False]) / min(times[True])
    prefill = statistics.median(times["prefill"])
    expected = before / (before - prefill * (1 - 1 / group))  # if only the saved prefill work changed
    prompt_tokens = sum(map(len, prompts)) / len(prompts)
    new_tokens = sum(len(x) for x in out[True]["responses"]) / (len(prompts) * group)
    print(f"{name}: repeated {before * 1e3:.0f} ms, prefill once {after * 1e3:.0f} ms, {before / after:.2f}x "
          f"(best of each: {best:.2f}x)")
    return [name, f"{len(prompts)} x {group}", f"{prompt_tokens:.0f}", f"{new_tokens:.1f}", str(repeats),
            f"{before * 1e3:.0f}", f"{prefill * 1e3:.0f}", f"{after * 1e3:.0f}", f"{before / after:.2f}x",
            f"{best:.2f}x", f"{expected:.2f}x"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="2 repeats, RESULTS.md untouched")
    ap.add_argument("--hf-dir", default="", help="also a real checkpoint, e.g. runs/smollm2-135m-instruct "
                    "(3 repeats: about 6 minutes on 2 cores)")
    args = ap.parse_args()
    repeats = 2 if args.quick else args.repeats
    load = [os.getloadavg()[0]]
    rows = [run("arithmetic", arithmetic_scenario(), 5 * repeats)]  # 20-100 ms a rollout: more repeats
    files = gsm8k_files()
    if files is not None:
        rows.append(run("gsm8k-4shot", gsm8k_scenario(files), repeats))
        if args.hf_dir:
            rows.append(run(f"gsm8k-4shot {Path(args.hf_dir).name}", hf_scenario(files, args.hf_dir),
                            min(repeats, 3)))
    load.append(os.getloadavg()[0])
    table = markdown_table(["scenario", "prompts x G", "prompt tokens", "new tokens / sample", "repeats",
                            "repeated prompts (ms, median)", "of which prefill (ms)", "prefill once (ms, median)",
                            "speed-up (medians)", "speed-up (best of each)", "expected from the prefill share"], rows)
    print(table)
    if args.quick:
        return
    commit = results_commit()
    body = (f"## GRPO rollouts: prefill once per prompt (`python -m benchmarks.rollout`)\n\n"
            f"Commit {commit}; {machine_description()}; interleaved repeats after a compiling one, random weights "
            "(except the checkpoint's row), the same samples on both paths (checked every repeat). "
            "`lm.align.rollout.rollout` prefills the n distinct prompts once and copies each prompt's KV cache "
            f"into its G sample rows; before, it prefilled all n * G repeated prompts. 1-minute load average "
            f"{load[0]:.1f} at the start and {load[1]:.1f} at the end (a shared machine: the ratios, from "
            "interleaved runs, are the result; the absolute times are inflated).\n\n" + table)
    write_section("rollout", body)


if __name__ == "__main__":
    prepare_process()
    main()
