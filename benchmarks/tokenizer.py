"""Tokenizer speed and memory against HF `tokenizers` and tiktoken, in one run.

    python -m benchmarks.tokenizer [--corpora ../shared/data/corpora] [--runs 3] [--stream-mb 200]

Each measured run is a fresh subprocess, so its peak RSS is its own. Prints a
table and writes the `tokenizer` section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.results import machine_description, markdown_table, write_section
from lm.cli_env import prepare_process

REPO = Path(__file__).resolve().parents[1]

EOT = "<|endoftext|>"


def _peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + kids) / 1024  # parent plus its largest worker: an upper bound on the peak


# ----------------------------------------------------------------- workers (run in subprocesses)
def worker_train_ours(path: str, vocab_size: int) -> dict:
    from lm.tokenizer import train_bpe

    stats: dict = {}
    t0 = time.perf_counter()
    train_bpe(path, int(vocab_size), [EOT], stats=stats)
    return {"seconds": time.perf_counter() - t0, "rss": _peak_rss_mib(), **stats}


def worker_train_hf(path: str, vocab_size: int) -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    t0 = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([path], trainer)
    return {"seconds": time.perf_counter() - t0, "rss": _peak_rss_mib()}


def worker_pretokenize(path: str) -> dict:
    from lm.tokenizer import count_pretokens

    t0 = time.perf_counter()
    count_pretokens(path, [EOT])
    s = time.perf_counter() - t0
    return {"seconds": s, "mb_per_s": os.path.getsize(path) / s / 1e6, "rss": _peak_rss_mib()}


def worker_encode(path: str, corpora: str) -> dict:
    import tiktoken
    import tokenizers

    from lm.tokenizer import load_gpt2_tokenizer

    text = Path(path).read_bytes().decode("utf-8")
    nbytes = len(text.encode("utf-8"))
    ours = load_gpt2_tokenizer(f"{corpora}/gpt2_vocab.json", f"{corpora}/gpt2_merges.txt", [EOT])
    enc = tiktoken.get_encoding("gpt2")
    bpe = tokenizers.models.BPE.from_file(f"{corpora}/gpt2_vocab.json", f"{corpora}/gpt2_merges.txt")
    hf = tokenizers.Tokenizer(bpe)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.add_special_tokens([EOT])
    out = {}

    def timed(name, fn):
        times, ids = [], None
        for _ in range(3):
            t0 = time.perf_counter()
            ids = fn()
            times.append(time.perf_counter() - t0)
        out[name] = {"mb_per_s": nbytes / statistics.median(times) / 1e6}
        return ids

    ref = timed("tiktoken (1 thread)", lambda: enc.encode(text, allowed_special={EOT}))
    ids_hf = timed("HF tokenizers", lambda: hf.encode(text).ids)
    ids_ours = timed("ours, encode (1 process)", lambda: ours.encode(text))
    ids_par = timed("ours, encode_parallel (2 processes)", lambda: ours.encode_parallel(text, num_workers=2))
    out["identical"] = ids_ours == ref and ids_par == ref and ids_hf == ref
    return out


def worker_stream(path: str, corpora: str) -> dict:
    from lm.tokenizer import load_gpt2_tokenizer

    tok = load_gpt2_tokenizer(f"{corpora}/gpt2_vocab.json", f"{corpora}/gpt2_merges.txt", [EOT])
    size = os.path.getsize(path)
    marks, n, read = [], 0, [0]

    def lines(f):
        for line in f:
            read[0] += len(line)  # characters, close to bytes for this mostly-ASCII text
            yield line

    t0 = time.perf_counter()
    with open(path, encoding="utf-8", newline="") as f:
        for i, _ in enumerate(tok.encode_iterable(lines(f))):
            n += 1
            if i % 2_000_000 == 0:
                rss_mib = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                marks.append((round(read[0] / size, 2), rss_mib))
    s = time.perf_counter() - t0
    return {"tokens": n, "seconds": s, "mb_per_s": size / s / 1e6, "rss_marks": marks, "rss": _peak_rss_mib()}


WORKERS = {f.__name__: f
           for f in (worker_train_ours, worker_train_hf, worker_pretokenize, worker_encode, worker_stream)}


def run_worker(name: str, *args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.tokenizer", "--worker", name, *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def median_of(name: str, runs: int, *args) -> dict:
    results = [run_worker(name, *args) for _ in range(runs)]
    return {"seconds": statistics.median(r["seconds"] for r in results),
            "rss": max(r["rss"] for r in results), "all": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_corpora = os.environ.get("LM_SHARED_DIR", str(REPO.parent / "shared")) + "/data/corpora"
    ap.add_argument("--corpora", default=default_corpora)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--stream-mb", type=int, default=200)
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        name, *rest = args.worker
        print(json.dumps(WORKERS[name](*rest)))
        return

    corpora = Path(args.corpora)
    base = corpora / "tinystories_train_sample_2MiB.txt"
    if not base.is_file():
        sys.exit(f"TinyStories sample not found at {base}; pass --corpora DIR (the shared corpora folder)")
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(corpora / "tiktoken_gpt2_cache"))
    tmp = Path(tempfile.mkdtemp(prefix="lm-bench-tok-"))
    big = tmp / "tinystories_16MiB.txt"
    big.write_bytes(base.read_bytes() * 8)

    rows = []
    print(f"BPE training, vocab 10,000, medians of {args.runs} runs")
    for label, path, target in (("2 MiB", base, 2.0), ("16 MiB", big, 1.5)):
        ours = median_of("worker_train_ours", args.runs, path, 10_000)
        hf = median_of("worker_train_hf", args.runs, path, 10_000)
        ratio = ours["seconds"] / hf["seconds"]
        rows.append([label, f"{ours['seconds']:.2f}", f"{hf['seconds']:.2f}", f"{ratio:.2f}x",
                     f"<= {target}x", "yes" if ratio <= target else "NO",
                     f"{ours['rss']:.0f}", f"{hf['rss']:.0f}"])
        print(rows[-1])
    pre = median_of("worker_pretokenize", args.runs, big)
    pre_mbs = big.stat().st_size / pre["seconds"] / 1e6

    enc = run_worker("worker_encode", base, corpora)
    tik = enc["tiktoken (1 thread)"]["mb_per_s"]
    enc_rows = [[k, f"{v['mb_per_s']:.1f}", f"{v['mb_per_s'] / tik:.2f}x"]
                for k, v in enc.items() if isinstance(v, dict)]

    stream_path = tmp / "stream.txt"
    reps = max(1, (args.stream_mb << 20) // base.stat().st_size + 1)
    with open(stream_path, "wb") as f:
        data = base.read_bytes()
        for _ in range(reps):
            f.write(data)
    stream = run_worker("worker_stream", stream_path, corpora)
    stream_path.unlink()
    big.unlink()

    train_table = markdown_table(
        ["file", "ours (s)", "HF BpeTrainer (s)", "ours / HF", "target", "met", "ours peak RSS (MiB)",
         "HF peak RSS (MiB)"], rows)
    enc_table = markdown_table(["encoder (GPT-2 vocab, 2 MiB TinyStories)", "MB/s", "vs tiktoken"], enc_rows)
    every = max(1, len(stream["rss_marks"]) // 6)
    marks = ", ".join(f"{int(p * 100)}%: {r} MiB" for p, r in stream["rss_marks"][::every])
    stream_mib = stream_path.stat().st_size if stream_path.exists() else reps * base.stat().st_size >> 20
    body = f"""## Tokenizer (`python -m benchmarks.tokenizer`)
Machine: {machine_description()}. Medians of {args.runs} runs, each in a fresh process.
Peak RSS counts the parent plus its largest worker process.

BPE training, vocab 10,000, special token `<|endoftext|>`, on the TinyStories 2 MiB sample and on it repeated 8 times:

{train_table}

Pre-tokenization alone on the 16 MiB file: {pre_mbs:.1f} MB/s ({pre['seconds']:.2f} s, all cores).

{enc_table}

Ids identical across ours, tiktoken and HF: **{enc['identical']}**. Target: ours at least 0.5x tiktoken.

`encode_iterable` over a {stream_mib} MiB file
(TinyStories repeated), one process: {stream['mb_per_s']:.1f} MB/s, {stream['tokens']:,} tokens, peak RSS
{stream['rss']:.0f} MiB. RSS as the stream advances: {marks}.
"""
    print(body)
    write_section("tokenizer", body)


if __name__ == "__main__":
    prepare_process()
    main()
