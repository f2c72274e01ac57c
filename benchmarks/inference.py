"""Inference speed: the KV-cache decoders (on-device loop and the paged continuous-batching engine)
against recomputing without a cache and against a PyTorch KV cache of the same model, with MBU;
continuous against static batching (throughput, TTFT, inter-token latency); SmolLM2-135M-Instruct
through `lm.interop` against transformers' `generate` (when runs/smollm2-135m-instruct exists);
then speculative decoding, fixed and `draft_len="auto"`, against plain decoding.

    python benchmarks/inference.py                    # trains the speculative target/draft pair if missing
    python benchmarks/inference.py --quick            # a smoke test: fewer repeats and tokens, no RESULTS.md

The engine comparison uses the `bench` preset (the training-step benchmark model) with random
weights: greedy decoding, batch 1 and 8. Prefill reads 128-token prompts; decode generates 256
tokens after a 1-token prompt (the whole 256-token context). Every time is the best of
`--repeats` runs after a compiling warm-up. Speculative decoding needs a target and a draft that
agree, so both are trained on the same text (the embedded default corpus) with
`experiments.pretrain` into runs/ (reused on later runs). Writes the `inference` section of
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.results import commit as results_commit
from benchmarks.results import machine_description, markdown_table, write_section
from lm.cli_env import prepare_process
from lm.inference.draft_tuner import DraftTuner
from lm.inference.engine import Engine, EngineConfig
from lm.inference.generate import decode, generate_ids, start, stream_ids
from lm.inference.request import Request
from lm.inference.naive import sample_naive
from lm.inference.sampling import SamplingConfig
from lm.model import forward, get_preset, init

REPO = Path(__file__).resolve().parents[1]

PROMPT_LEN, NEW_TOKENS, BATCHES = 128, 256, (1, 8)
TARGET_DECODE_VS_TORCH = 1.5
TARGET_SPEC_SPEEDUP, SPEC_ACCEPTANCE = 2.0, 0.7
TARGET_AUTO_VS_PLAIN = 0.95


def best_times(fns: dict, repeats: int) -> dict:
    """Best wall time of each callable over `repeats` rounds, after one warm-up call each. Rounds run
    every callable in turn, so a busy machine slows all of them alike rather than whichever ran last."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def best_time(fn, repeats: int) -> float:
    return best_times({"fn": fn}, repeats)["fn"]


# ----------------------------------------------------------------- PyTorch KV cache
def torch_kv_model(params: dict, config):
    """A PyTorch eager implementation of the same model (pre-norm RMSNorm, half-split RoPE, GQA,
    SwiGLU, untied head) with a preallocated KV cache, loaded with the same weights."""
    import torch
    import torch.nn.functional as F

    c = config
    bad = {k: getattr(c, k) for k, v in dict(norm="rmsnorm", norm_position="pre", activation="swiglu",
                                             positions="rope", tie_embeddings=False, sliding_window=0,
                                             n_experts=0).items() if getattr(c, k) != v}
    if bad:
        raise ValueError(f"the PyTorch model covers the bench architecture only; this config has {bad}")
    t = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731
    d, h, g, hd = c.d_model, c.n_heads, c.kv_heads, c.head_dim
    blocks = []
    for i in range(c.n_layers):
        p = jax.tree.map(lambda a, i=i: a[i], params["blocks"])  # layer i of the stacked layers
        blocks.append(dict(an=t(p["attn_norm"]["scale"]), mn=t(p["mlp_norm"]["scale"]),
                           wqkv=torch.cat([t(p["attn"][w]).reshape(d, -1) for w in ("wq", "wk", "wv")], 1),
                           wo=t(p["attn"]["wo"]).reshape(h * hd, d), w1=t(p["mlp"]["w1"]["kernel"]),
                           w3=t(p["mlp"]["w3"]["kernel"]), w2=t(p["mlp"]["w2"]["kernel"])))
    emb, head, fnorm = t(params["embed"]["embedding"]), t(params["head"]["kernel"]), t(params["final_norm"]["scale"])
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(2 * c.context_length, dtype=torch.float32)[:, None] * inv
    cos, sin = torch.cos(ang), torch.sin(ang)

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c.norm_eps) * w

    def rope(x, pos):  # x [b, heads, t, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        cs, sn = cos[pos], sin[pos]
        return torch.cat([x1 * cs - x2 * sn, x2 * cs + x1 * sn], -1)

    class Model:
        def new_cache(self, batch, max_len):
            shape = (c.n_layers, batch, g, max_len, hd)
            return torch.zeros(shape), torch.zeros(shape)

        def __call__(self, tokens, start, cache, last_only=False):
            """tokens [b, t] at positions start..start+t-1 -> logits; writes the cache in place."""
            ks, vs = cache
            b, n = tokens.shape
            pos = torch.arange(start, start + n)
            x = emb[tokens]
            for i, p in enumerate(blocks):
                y = rms(x, p["an"]) @ p["wqkv"]
                q, k, v = y.split([h * hd, g * hd, g * hd], -1)
                q = rope(q.view(b, n, h, hd).transpose(1, 2), pos)
                ks[i, :, :, start:start + n] = rope(k.view(b, n, g, hd).transpose(1, 2), pos)
                vs[i, :, :, start:start + n] = v.view(b, n, g, hd).transpose(1, 2)
                a = F.scaled_dot_product_attention(q, ks[i, :, :, :start + n], vs[i, :, :, :start + n],
                                                   is_causal=n > 1, enable_gqa=g != h)
                x = x + a.transpose(1, 2).reshape(b, n, h * hd) @ p["wo"]
                y = rms(x, p["mn"])
                x = x + (F.silu(y @ p["w1"]) * (y @ p["w3"])) @ p["w2"]
            if last_only:
                x = x[:, -1]
            return rms(x, fnorm) @ head

    return Model()


def torch_generate(model, prompts: np.ndarray, new_tokens: int):
    import torch

    with torch.inference_mode():
        tokens = torch.from_numpy(prompts).long()
        cache = model.new_cache(tokens.shape[0], tokens.shape[1] + new_tokens)
        nxt = model(tokens, 0, cache, last_only=True).argmax(-1)
        out = [nxt]
        for i in range(new_tokens - 1):
            nxt = model(nxt[:, None], tokens.shape[1] + i, cache, last_only=True).argmax(-1)
            out.append(nxt)
        return torch.stack(out, 1).numpy()


# ----------------------------------------------------------------- no cache
def no_cache_generate(params, config, prompts: np.ndarray, new_tokens: int) -> np.ndarray:
    """lm/inference/naive.py's method for a batch: the whole context buffer re-run for every token."""
    if prompts.shape[0] == 1:
        return np.array([sample_naive(params, config, prompts[0].tolist(), new_tokens, jax.random.PRNGKey(0),
                                      temperature=0)])
    buf = np.zeros((prompts.shape[0], config.context_length), np.int32)
    buf[:, : prompts.shape[1]] = prompts
    buf, out = jnp.asarray(buf), []
    for i in range(new_tokens):
        nxt = _no_cache_step(params, buf, jnp.int32(prompts.shape[1] + i - 1), config)
        buf = buf.at[:, prompts.shape[1] + i].set(nxt, mode="drop")
        out.append(nxt)
    return np.stack(jax.device_get(out), 1)


@functools.partial(jax.jit, static_argnums=3)
def _no_cache_step(params, buf, last, config):
    return jnp.argmax(forward(params, buf, config)[:, last], -1).astype(jnp.int32)


# ----------------------------------------------------------------- memory bandwidth and MBU
def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Measured bytes/s of this machine's memory: the best of `repeats` copies of a large array
    (read + write, so 2 bytes moved per byte copied)."""
    src = np.ones(megabytes * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def decode_bytes_per_token(params, config, context: float) -> float:
    """Bytes a batch-1 decode step reads: every parameter once, plus the keys and values of `context`
    cached tokens in every layer."""
    weights = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    kv = 2 * config.n_layers * config.kv_heads * config.head_dim * jnp.dtype(config.dtype).itemsize * context
    return weights + kv


def engine_decode(params, config, prompts, new_tokens: int, engine: EngineConfig):
    """Greedy decode through the continuous-batching engine; returns the tokens of each request."""
    eng = Engine(params, config, engine)
    s = SamplingConfig(temperature=0, max_new_tokens=new_tokens)
    return [r.tokens for r in eng.generate([Request(list(p), s) for p in prompts])]


# ----------------------------------------------------------------- engine table
def engine_table(repeats: int, new_tokens: int, naive_tokens: int, bandwidth: float) -> tuple[str, dict]:
    config = get_preset("bench")
    params = jax.jit(init, static_argnums=0)(config, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    greedy = SamplingConfig(temperature=0, max_new_tokens=new_tokens)
    tmodel = torch_kv_model(params, config)

    # the PyTorch model computes the same logits
    import torch

    check = rng.integers(0, config.vocab_size, (2, 64)).astype(np.int32)
    with torch.inference_mode():
        tl = tmodel(torch.from_numpy(check).long(), 0, tmodel.new_cache(2, 64)).numpy()
    max_diff = float(np.abs(tl - np.asarray(forward(params, jnp.asarray(check), config))).max())

    default_threads = torch.get_num_threads()
    threads = sorted({1, default_threads})

    def with_threads(n, fn):
        def run():
            torch.set_num_threads(n)
            return fn()
        return run

    rows, res = [], {}
    for b in BATCHES:
        long = rng.integers(0, config.vocab_size, (b, PROMPT_LEN)).astype(np.int32)
        short = rng.integers(0, config.vocab_size, (b, 1)).astype(np.int32)
        t = best_times({
            "ours_prefill": lambda: jax.block_until_ready(start(params, config, long.tolist(), greedy).out),
            "ours_decode": lambda: generate_ids(params, config, short.tolist(), greedy),
            "engine_decode": lambda: engine_decode(params, config, short.tolist(), new_tokens,
                                                   EngineConfig(slots=b, decode_steps=8)),
            **{f"torch_prefill_{n}": with_threads(n, lambda: torch_generate(tmodel, long, 1)) for n in threads},
            **{f"torch_decode_{n}": with_threads(n, lambda: torch_generate(tmodel, short, new_tokens))
               for n in threads},
            "naive_prefill": lambda: no_cache_generate(params, config, long, 1),
        }, repeats)
        t["naive_decode"] = best_time(lambda: no_cache_generate(params, config, short, naive_tokens),
                                      max(1, repeats // 2))
        # same tokens from all three
        ours, _ = generate_ids(params, config, short.tolist(), dataclasses.replace(greedy, max_new_tokens=24))
        same = (np.array_equal(ours, torch_generate(tmodel, short, 24))
                and np.array_equal(ours[:, :8], no_cache_generate(params, config, short, 8))
                and np.array_equal(ours, np.array(engine_decode(params, config, short.tolist(), 24,
                                                                EngineConfig(slots=b, decode_steps=8)))))
        for phase in ("prefill", "decode"):
            t[f"torch_{phase}"] = min(t[f"torch_{phase}_{n}"] for n in threads)
        torch.set_num_threads(default_threads)
        r = {"ours": (b * PROMPT_LEN / t["ours_prefill"], b * new_tokens / t["ours_decode"]),
             "engine": (float("nan"), b * new_tokens / t["engine_decode"]),
             "torch": (b * PROMPT_LEN / t["torch_prefill"], b * new_tokens / t["torch_decode"]),
             "naive": (b * PROMPT_LEN / t["naive_prefill"], b * naive_tokens / t["naive_decode"])}
        res[b] = r
        names = {"ours": "ours: KV cache, jit, on-device loop", "engine": "ours: paged engine (continuous batching)",
                 "torch": "PyTorch eager, KV cache", "naive": "no cache (recompute, lm/inference/naive.py)"}
        per_token = decode_bytes_per_token(params, config, new_tokens / 2)
        for key in ("ours", "engine", "torch", "naive"):
            pf, dc = r[key]
            mbu = f"{dc / b * per_token / bandwidth:.0%}" if b == 1 else "-"
            rows.append([names[key], b, "-" if pf != pf else f"{pf:,.0f}", f"{dc:,.0f}", f"{dc / r['torch'][1]:.2f}x",
                         mbu, "yes" if same else "NO"])
        print(f"batch {b}: " + ", ".join(f"{k} prefill {v[0]:,.0f} / decode {v[1]:,.0f} tok/s" for k, v in r.items()),
              flush=True)
    table = markdown_table(["engine", "batch", "prefill tok/s", "decode tok/s", "decode vs PyTorch", "MBU",
                            "same greedy tokens"], rows)
    c = config
    text = (f"Model: `bench` preset ({c.num_params():,} parameters: d_model {c.d_model}, {c.n_layers} layers, "
            f"{c.n_heads} heads, vocab {c.vocab_size}, context {c.context_length}), float32, random weights, greedy. "
            f"Prefill: {PROMPT_LEN}-token prompts. Decode: {new_tokens} new tokens after a 1-token prompt "
            f"(no cache: {naive_tokens} tokens; its cost per token is constant since it always re-runs the full "
            f"{c.context_length}-token buffer). The PyTorch model, loaded with the same weights, matches our logits "
            f"to {max_diff:.1e}; it runs eagerly under `torch.inference_mode`, and its time is the better of "
            f"{' and '.join(map(str, threads))} threads (its multi-threaded small ops stall badly when other jobs "
            f"share the cores, which would flatter us). The paged engine row is `lm.inference.engine` with as many "
            f"slots as the batch and 8 decode steps per device call. MBU at batch 1: bytes a decode step reads (every "
            f"parameter, {decode_bytes_per_token(params, config, 0) / 1e6:.1f} MB, plus the keys and values of the "
            f"{new_tokens // 2} cached tokens of an average step) times tokens/s, over the measured memory bandwidth "
            f"({bandwidth / 1e9:.1f} GB/s, a large NumPy copy); the weights nearly fit this CPU's L3 cache, so "
            f"reading them can run faster than memory, and an MBU over 100% says they mostly came from cache."
            f"\n\n{table}\n")
    return text, {"results": res, "max_diff": max_diff}


# ----------------------------------------------------------------- continuous vs static batching
def mixed_requests(rng, n: int, vocab: int, prompt_range: tuple[int, int], out_range: tuple[int, int]):
    """n (prompt ids, tokens wanted) pairs with lengths drawn uniformly from the ranges."""
    return [(rng.integers(0, vocab, int(rng.integers(*prompt_range))).tolist(), int(rng.integers(*out_range)))
            for _ in range(n)]


def run_static(params, config, requests, batch: int, chunk: int = 8) -> list[list[float]]:
    """Today's static batching: requests in arrival order, `batch` at a time through `stream_ids`; a batch
    decodes until its longest request is served. Returns each request's token arrival times (from t0)."""
    t0 = time.perf_counter()
    times: list[list[float]] = [[] for _ in requests]
    for b in range(0, len(requests), batch):
        group = requests[b: b + batch]
        sampling = SamplingConfig(temperature=0, max_new_tokens=max(m for _, m in group))
        for rows in stream_ids(params, config, [p for p, _ in group], sampling, chunk):
            now = time.perf_counter() - t0
            for j, new in enumerate(rows):
                times[b + j] += [now] * min(len(new), group[j][1] - len(times[b + j]))
    return times


def run_engine(params, config, requests, engine: EngineConfig) -> list[list[float]]:
    """The same requests submitted at once to the continuous-batching engine, each with its own budget."""
    eng = Engine(params, config, engine)
    reqs = [Request(p, SamplingConfig(temperature=0, max_new_tokens=m)) for p, m in requests]
    t0 = time.perf_counter()
    eng.generate(reqs)
    return [[t - t0 for t in r.token_times] for r in reqs]


def latency_stats(times: list[list[float]]) -> dict:
    """Throughput, time to first token (p50, p99) and inter-token latency (p50, p99). Tokens that arrive
    together after a gap g (one device call) count as len(group) gaps of g / len(group)."""
    total = max(t[-1] for t in times if t)
    gaps = []
    for t in times:
        arrivals, counts = np.unique(np.asarray(t), return_counts=True)
        for prev, now, m in zip(arrivals[:-1], arrivals[1:], counts[1:]):
            gaps += [(now - prev) / m] * int(m)
    ttft = [t[0] for t in times if t]
    return {"tokens": sum(map(len, times)), "seconds": total, "tok_s": sum(map(len, times)) / total,
            "ttft_p50": float(np.percentile(ttft, 50)), "ttft_p99": float(np.percentile(ttft, 99)),
            "itl_p50": float(np.percentile(gaps, 50)), "itl_p99": float(np.percentile(gaps, 99))}


def serving_table(params, config, requests, batch: int, engine: EngineConfig, repeats: int) -> tuple[str, dict]:
    """Static vs continuous batching on the same requests, interleaved; the run with the best throughput
    of each (after a warm-up that compiles every shape)."""
    run_static(params, config, requests, batch)
    run_engine(params, config, requests, engine)
    best = {}
    for _ in range(repeats):
        for name, fn in (("static", lambda: run_static(params, config, requests, batch)),
                         ("engine", lambda: run_engine(params, config, requests, engine))):
            st = latency_stats(fn())
            if name not in best or st["tok_s"] > best[name]["tok_s"]:
                best[name] = st
    rows = []
    names = {"static": f"static batches of {batch} (`stream_ids`, left-padded)",
             "engine": f"continuous batching, {engine.slots} slots (paged engine)"}
    for name in ("static", "engine"):
        st = best[name]
        rows.append([names[name], f"{st['tokens']:,}", f"{st['seconds']:.1f}", f"{st['tok_s']:,.0f}",
                     f"{st['tok_s'] / best['static']['tok_s']:.2f}x", f"{st['ttft_p50'] * 1e3:,.0f} / "
                     f"{st['ttft_p99'] * 1e3:,.0f}", f"{st['itl_p50'] * 1e3:.1f} / {st['itl_p99'] * 1e3:.1f}"])
        print(f"{name}: {st}", flush=True)
    table = markdown_table(["batching", "tokens served", "seconds", "tokens/s", "vs static", "TTFT ms p50 / p99",
                            "inter-token ms p50 / p99"], rows)
    return table, best


# ----------------------------------------------------------------- speculative decoding
def ensure_run(name: str, args: list[str]) -> str:
    run_dir = REPO / "runs" / name
    if not (run_dir / "checkpoints").is_dir():
        from experiments.pretrain import parse_config, pretrain

        t0 = time.perf_counter()
        pretrain(parse_config(["--out", str(REPO / "runs"), "--name", name, "--sample-tokens", "0", *args]),
                 progress=False)
        print(f"trained {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return str(run_dir)


DRAFT = ["--model.d_model", "64", "--model.n_layers", "1", "--model.n_heads", "2", "--model.d_ff", "256"]


def val_loss(run_dir: str) -> float:
    """The run's final held-out loss (summary.json), or its last evaluated one (metrics.jsonl) if it was cut short."""
    summary = Path(run_dir) / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())["val_loss"]
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if "val_loss" in json.loads(x)][-1]["val_loss"]


def train_pair(target_steps: int, draft_steps: int) -> tuple[str, str]:
    """Run directories of the target (`bench` preset) and the draft, trained on the same text if missing."""
    common = ["--preset", "bench", "--batch-size", "8", "--eval-every", "100", "--eval-batches", "4",
              "--save-every", "100", "--log-every", "25"]
    return (ensure_run(f"bench-target-{target_steps}", [*common, "--steps", str(target_steps)]),
            ensure_run(f"bench-draft-{draft_steps}", [*common, *DRAFT, "--steps", str(draft_steps)]))


SPEC_PROMPTS = ("The ", "Return the ", "This module provides ", "If the argument is ", "A list of ",
                "When the ", "Each of the ", "It is ")


def median_times(fns: dict, repeats: int) -> dict:
    """Median wall time of each callable over `repeats` rounds after one warm-up call each, every round
    running the callables in turn (interleaved, so load on a shared machine falls on all of them alike),
    starting one callable later each round: a fixed order put plain decoding first every time, and a copy of
    plain run second measured 0.976-0.987x of it (slot order alone, not the method)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = fns[name]
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def speculative_table(repeats: int, target_steps: int, draft_steps: int, new_tokens: int, ks, temperatures,
                      n_prompts: int = len(SPEC_PROMPTS)):
    """Per prompt, every variant runs interleaved `repeats` times (after a warm-up); a variant's speedup is the
    median over prompts of (its tokens / its median time) over (plain tokens / plain's median time)."""
    from lm.inference.load import load_run
    from lm.inference.speculative import speculate, speculative_generate

    target_run, draft_run = train_pair(target_steps, draft_steps)
    tparams, tc, tok = load_run(target_run)
    dparams, dc, _ = load_run(draft_run, tokenizer=False)
    tv, dv = val_loss(target_run), val_loss(draft_run)
    prompts = [tok.encode(p) for p in SPEC_PROMPTS[:n_prompts]]
    rows, summary = [], {"best": (0.0, None, None, None), "bound": 0.0, "auto": {}, "auto_shared": {}}
    for temp in temperatures:
        s = SamplingConfig(temperature=temp, max_new_tokens=new_tokens, seed=1)
        longest = max(DraftTuner().ks)  # auto sizes its buffers for the longest draft it may use
        for k in DraftTuner().ks:  # compile every program auto may pick (as the fixed-k runs are compiled first)
            speculative_generate(tparams, tc, dparams, dc, prompts[0], s, "auto", tuner=DraftTuner(
                ks=tuple(sorted({k, longest})), plain_segment=4, probe_rounds=2, reprobe_after=4))
        shared_tuner = DraftTuner()  # one tuner for every prompt and run, as a server would keep it
        per = []  # per prompt: {variant: (tokens, median seconds, extra)}
        for p in prompts:
            res: dict = {}

            def plain(p=p):
                jax.block_until_ready(decode(tparams, tc, start(tparams, tc, [p], s), s).lengths)

            def draft_only(p=p):
                jax.block_until_ready(decode(dparams, dc, start(dparams, dc, [p], s), s).lengths)

            def spec(k, p=p):
                def run():
                    res[k] = jax.device_get(speculate(tparams, tc, dparams, dc, p, s, k)[1:])
                return run

            def auto(p=p):  # a fresh tuner for every prompt: its probing is part of the cost
                res["auto"] = speculative_generate(tparams, tc, dparams, dc, p, s, "auto")

            def auto_shared(p=p):
                res["auto_shared"] = speculative_generate(tparams, tc, dparams, dc, p, s, "auto", tuner=shared_tuner)

            times = median_times({"plain": plain, "draft": draft_only, **{k: spec(k) for k in ks}, "auto": auto,
                                  "auto_shared": auto_shared}, repeats)
            n_plain = int(generate_ids(tparams, tc, [p], s)[1][0])
            per.append((times, n_plain, res))
            if temp == 0:
                want = generate_ids(tparams, tc, [p], s)[0][0, :n_plain].tolist()
                summary["auto_exact"] = summary.get("auto_exact", True) and res["auto"].tokens == want
            print(f"T={temp} prompt {SPEC_PROMPTS[len(per) - 1]!r}: plain {n_plain / times['plain']:,.0f} tok/s; "
                  f"auto {len(res['auto'].tokens) / times['auto'] * times['plain'] / n_plain:.2f}x "
                  f"{list(res['auto'].draft_lengths)}; kept "
                  f"{len(res['auto_shared'].tokens) / times['auto_shared'] * times['plain'] / n_plain:.2f}x",
                  flush=True)

        def speedup(name, tokens):
            return float(np.median([tokens(r) / t[name] / (n / t["plain"]) for t, n, r in per]))

        n_all = sum(n for _, n, _ in per)
        t_plain = sum(t["plain"] for t, _, _ in per)
        step_s = t_plain / n_all
        rows.append([temp, "-", "-", f"{n_all / t_plain:,.0f}", "1.00x", "1", "1.00", "-"])
        print(f"T={temp}: plain {n_all / t_plain:,.0f} tok/s, draft alone "
              f"{n_all / sum(t['draft'] for t, _, _ in per):,.0f} tok/s", flush=True)
        for k in ks:
            n = sum(int(r[k][0]) for _, _, r in per)
            rounds = sum(int(r[k][1]) for _, _, r in per)
            acc = sum(int(r[k][2]) for _, _, r in per) / (k * rounds)
            t = sum(times[k] for times, _, _ in per)
            up = speedup(k, lambda r, k=k: int(r[k][0]))
            round_cost = t / rounds / step_s  # one draft-and-verify round, in plain decode steps
            rows.append([temp, k, f"{acc:.2f}", f"{n / t:,.0f}", f"{up:.2f}x", f"{n / rounds:.2f}",
                         f"{round_cost:.2f}", f"{(k + 1) / round_cost:.2f}x"])
            if up > summary["best"][0]:
                summary["best"] = (up, temp, k, acc)
            summary["bound"] = max(summary["bound"], (k + 1) / round_cost)
            print(f"T={temp} k={k}: acceptance {acc:.2f}, {n / t:,.0f} tok/s, {up:.2f}x, "
                  f"{n / rounds:.2f} tokens/round, round = {round_cost:.2f} steps", flush=True)
        for name, label in (("auto", "auto"), ("auto_shared", "auto, one tuner kept")):
            results = [r[name] for _, _, r in per]
            n = sum(len(x.tokens) for x in results)
            t = sum(times[name] for times, _, _ in per)
            up = speedup(name, lambda r, name=name: len(r[name].tokens))
            lo = min(x / (m / times["plain"]) for times, m, r in per for x in [len(r[name].tokens) / times[name]])
            summary[name][temp] = up
            summary.setdefault(name + "_min", {})[temp] = lo
            proposed = sum(x.proposed for x in results)
            acc = f"{sum(x.accepted for x in results) / proposed:.2f}" if proposed else "-"
            used = sorted({k for x in results for k in x.draft_lengths})
            rows.append([temp, label, acc, f"{n / t:,.0f}", f"**{up:.2f}x** (worst prompt {lo:.2f}x)", "-", "-",
                         f"chose {used}"])
            shown = [list(x.draft_lengths) for x in results] if name == "auto" else shared_tuner.history[-12:]
            print(f"T={temp} {label}: {up:.2f}x plain (median over prompts; worst {lo:.2f}x); lengths {shown}",
                  flush=True)
    table = markdown_table(["temperature", "draft length k", "acceptance", "tokens/s", "speedup",
                            "tokens per round", "round cost (plain steps)", "speedup if all accepted"], rows)
    cut = "" if (Path(target_run) / "summary.json").is_file() else (
        " (the last checkpoint of a longer run that was stopped there, so its learning rate had not decayed)")
    text = (f"Target: `bench` preset, {target_steps} steps{cut} (held-out loss {tv:.2f}); draft: d_model 64, 1 layer, "
            f"2 heads, d_ff 256, same tokenizer and data, {draft_steps} steps (held-out loss {dv:.2f}), "
            f"{dc.num_params():,} parameters against the target's {tc.num_params():,}. Both trained with "
            f"`experiments.pretrain` on the embedded corpus. Batch 1, {new_tokens} new tokens after each of "
            f"{len(prompts)} short prompts, no stop tokens. For each prompt every row's method ran {repeats} "
            f"times interleaved with the others, the order rotated each round (after a warm-up); a speedup is "
            f"the median over prompts of that "
            f"prompt's tokens/s (median time) over plain decoding's; tokens/s: all tokens over the summed median "
            f"times. Acceptance = accepted / proposed draft tokens. "
            f"Round cost: the time of one draft-and-verify round (k + 1 draft steps, one k + 1 token target "
            f"pass) over one plain decode step; k + 1 over it is the speedup even a perfect draft would give. "
            f"`auto`: `draft_len=\"auto\"` with a fresh `DraftTuner` for every prompt and every run (cold start: "
            f"its probing is paid every time), which decodes in segments, plain or speculative with the k it "
            f"predicts fastest from the costs and acceptance it has measured; its last column lists the draft "
            f"lengths it used (0: plain). `auto, one tuner kept`: one `DraftTuner` for all prompts and runs at "
            f"that temperature (as a server keeps it), so its measurements carry over.\n\n"
            f"{table}\n")
    return text, summary


# ----------------------------------------------------------------- SmolLM2-135M through lm.interop
SMOLLM2 = REPO / "runs" / "smollm2-135m-instruct"


def smollm2_section(run_dir: Path, repeats: int, new_tokens: int, bandwidth: float, n_requests: int) -> str:
    """Batch-1 decode of SmolLM2-135M-Instruct: ours (static loop and paged engine) against transformers'
    `generate` on the same checkpoint; then continuous against static batching on mixed requests."""
    import torch
    import transformers

    from lm.inference.paged import pages_for
    from lm.interop import load_hf

    params, config, tok = load_hf(run_dir)
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Tell me a long story about a robot "
                                                                             "who learns to paint."}]))
    greedy = SamplingConfig(temperature=0, max_new_tokens=new_tokens)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(run_dir), dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    slots, longest = 8, 64 + 64
    e1 = EngineConfig(slots=1, decode_steps=8, num_pages=pages_for(len(prompt) + new_tokens, 16) + 1)
    en = EngineConfig(slots=slots, decode_steps=8, prefill_rows=8, num_pages=slots * pages_for(longest, 16) + 16)

    def hf(threads):
        def run():
            torch.set_num_threads(threads)
            with torch.inference_mode():
                return hf_model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return run

    default_threads = torch.get_num_threads()
    threads = sorted({1, default_threads})
    t = best_times({"ours": lambda: generate_ids(params, config, [prompt], greedy),
                    "engine": lambda: engine_decode(params, config, [prompt], new_tokens, e1),
                    **{f"hf_{n}": hf(n) for n in threads}}, repeats)
    torch.set_num_threads(default_threads)
    t["hf"] = min(t[f"hf_{n}"] for n in threads)
    ours = generate_ids(params, config, [prompt], greedy)[0][0].tolist()
    theirs = hf(default_threads)()[0, len(prompt):].tolist()
    eos = set(tok.special_ids.values())
    agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b or a in eos), len(ours))
    per_token = decode_bytes_per_token(params, config, len(prompt) + new_tokens / 2)
    rows = []
    for name, key in (("ours: KV cache, jit, on-device loop", "ours"), ("ours: paged engine", "engine"),
                      (f"transformers {transformers.__version__} `generate` (PyTorch eager)", "hf")):
        tok_s = new_tokens / t[key]
        rows.append([name, f"{tok_s:,.1f}", f"{tok_s / (new_tokens / t['hf']):.2f}x",
                     f"{tok_s * per_token / bandwidth:.0%}"])
        print(f"SmolLM2 {key}: {tok_s:,.1f} tok/s", flush=True)
    decode_table = markdown_table(["engine", "decode tok/s (batch 1)", "vs transformers", "MBU"], rows)
    rng = np.random.default_rng(1)
    requests = mixed_requests(rng, n_requests, config.vocab_size, (8, 65), (8, 65))
    serve_table, best = serving_table(params, config, requests, slots, en, max(1, repeats // 2))
    ratio = best["engine"]["tok_s"] / best["static"]["tok_s"]
    return (f"`{run_dir.name}` ({config.num_params():,} parameters, "
            f"{config.n_layers} layers, GQA {config.n_heads}/{config.kv_heads} heads, float32), loaded with "
            f"`lm.interop.load_hf`; transformers loads the same safetensors directory. Decode: greedy, "
            f"{new_tokens} new tokens after a {len(prompt)}-token chat prompt, batch 1 (time includes the prompt's "
            f"prefill for all three; transformers is held to {new_tokens} tokens with `min_new_tokens`, and its "
            f"time is the better of {' and '.join(map(str, threads))} threads). The greedy tokens agree for the "
            f"first {agree} of {new_tokens} (up to the first end-of-turn token or float32 rounding "
            f"difference). MBU: {per_token / 1e6:.0f} MB read per token (every parameter and the average step's "
            f"cached keys and values) times tokens/s over {bandwidth / 1e9:.1f} GB/s.\n\n{decode_table}\n\n"
            f"Serving: {n_requests} requests, prompts of 8-64 random tokens, 8-64 new tokens each (greedy, no "
            f"stop), all submitted at once; static batches of {slots} against {slots} engine slots "
            f"(decode {en.decode_steps} steps per device call): continuous/static throughput **{ratio:.2f}x**.\n\n"
            f"{serve_table}\n")


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="few tokens and repeats; prints only")
    ap.add_argument("--target-steps", type=int, default=400)
    ap.add_argument("--draft-steps", type=int, default=400)
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--skip-speculative", action="store_true")
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--requests", type=int, default=64, help="requests in the continuous-batching comparison")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8], help="fixed draft lengths to time")
    ap.add_argument("--spec-prompts", type=int, default=len(SPEC_PROMPTS), choices=range(1, len(SPEC_PROMPTS) + 1),
                    metavar=f"1..{len(SPEC_PROMPTS)}", help="prompts in the speculative table")
    args = ap.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    new_tokens, naive_tokens = (32, 4) if args.quick else (NEW_TOKENS, 32)
    header = (f"Machine: {machine_description()}, jax {jax.__version__}, torch {_torch_version()}. Best of {repeats} "
              f"interleaved runs after a compiling warm-up; 1-minute load average at the start "
              f"{os.getloadavg()[0]:.1f} (other jobs shared the cores, so absolute speeds are noisy; methods in one "
              f"table ran interleaved). Commit {results_commit()}.\n")
    parts = []

    def emit(section: str, title: str, text: str, head: str = header) -> None:
        """Print a part and (unless --quick) write it as its own section of RESULTS.md."""
        body = f"{title}\n{head}\n{text}"
        print("\n" + body, flush=True)
        parts.append(body)
        if not args.quick:
            write_section(section, body)

    bandwidth = memory_bandwidth()
    print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s", flush=True)
    if not args.skip_engine:
        text, res = engine_table(repeats, new_tokens, naive_tokens, bandwidth)
        b1 = res["results"][1]
        ratio, eratio = b1["ours"][1] / b1["torch"][1], b1["engine"][1] / b1["torch"][1]
        emit("inference", "## Inference: prefill and decode (`python benchmarks/inference.py`)",
             f"{text}\nTarget: decode at batch 1 at least "
                     f"{TARGET_DECODE_VS_TORCH}x the PyTorch KV cache: {ratio:.2f}x (paged engine {eratio:.2f}x), "
                     f"**{'met' if min(ratio, eratio) >= TARGET_DECODE_VS_TORCH else 'not met'}**.\n")
    if not args.skip_serving:
        config = get_preset("bench")
        params = jax.jit(init, static_argnums=0)(config, jax.random.PRNGKey(0))
        rng = np.random.default_rng(0)
        n = 16 if args.quick else args.requests
        requests = mixed_requests(rng, n, config.vocab_size, (8, 129), (8, 129))
        engine = EngineConfig(slots=8, decode_steps=8, prefill_rows=8)
        table, best = serving_table(params, config, requests, 8, engine, repeats)
        ratio = best["engine"]["tok_s"] / best["static"]["tok_s"]
        emit("inference-serving", "## Inference: continuous batching (`python benchmarks/inference.py`)",
             f"`bench` preset, random weights, {n} requests with prompts of "
                     f"8-128 random tokens and 8-128 new tokens each (uniform; greedy, no stop), all submitted at "
                     f"once. Static batching is today's `stream_ids` over batches of 8 in arrival order (8 decode "
                     f"steps per device call; a batch runs until its longest request is served, and only the tokens "
                     f"each request asked for count); the engine has 8 slots, pages of {engine.page_size} tokens, "
                     f"prefill chunks of up to {engine.prefill_chunk} and {engine.decode_steps} decode steps per "
                     f"device call. TTFT: from submission (all at t = 0) to a request's first token. Inter-token: "
                     f"the gaps between a request's tokens (tokens that reach the host together share their "
                     f"gap). Best throughput of {repeats} interleaved runs.\n\n{table}\n\nContinuous/static "
                     f"throughput: **{ratio:.2f}x**.\n")
    if not args.skip_smollm2:
        if SMOLLM2.joinpath("config.json").is_file():
            emit("inference-smollm2", "## Inference: SmolLM2-135M-Instruct (`python benchmarks/inference.py`)",
                 smollm2_section(SMOLLM2, repeats, 16 if args.quick else 64, bandwidth, 8 if args.quick else 32))
        else:
            print(f"skipping SmolLM2: {SMOLLM2} not found (python -m experiments.convert_hf)", flush=True)
    if not args.skip_speculative:
        ks = (2, 4) if args.quick else tuple(args.ks)
        text, summary = speculative_table(repeats, args.target_steps, args.draft_steps, 48 if args.quick else 128,
                                          ks, (0.0, 0.7, 1.0), 2 if args.quick else args.spec_prompts)
        best, temp, k, acc = summary["best"]
        met = best >= TARGET_SPEC_SPEEDUP
        emit("inference-speculative", "## Inference: speculative decoding (`python benchmarks/inference.py`)",
             f"{text}\nTarget: at least {TARGET_SPEC_SPEEDUP}x when acceptance is "
                     f"at least {SPEC_ACCEPTANCE}: **{'met' if met else 'not met'}**. Best measured: {best:.2f}x "
                     f"(temperature {temp}, k={k}, acceptance {acc:.2f}). Even with every proposal accepted, "
                     f"this machine would allow at most {summary['bound']:.2f}x (last column): here the target's pass "
                     f"over k + 1 tokens costs a large part of k + 1 single-token steps (the small matmuls are "
                     f"compute-bound on this CPU, with weights that fit in its 32 MB L3 cache, rather than "
                     f"weight-bandwidth-bound as on a GPU), and that near-free verification is the saving "
                     f"speculative decoding relies on.\n\nTarget: `draft_len=\"auto\"` at least "
                     f"{TARGET_AUTO_VS_PLAIN}x plain decoding at every temperature: "
                     + ", ".join(f"{v:.2f}x at T={t}" for t, v in summary["auto"].items())
                     + " with a fresh tuner per prompt (median over prompts; worst single prompt "
                     + ", ".join(f"{v:.2f}x" for v in summary["auto_min"].values())
                     + f"), **{met_auto(summary['auto'])}**; "
                     + ", ".join(f"{v:.2f}x at T={t}" for t, v in summary["auto_shared"].items())
                     + f" with one tuner kept, **{met_auto(summary['auto_shared'])}**; "
                     f"greedy `auto` output equal to plain greedy decoding: "
                     f"{'yes' if summary.get('auto_exact') else 'NO'}.\n",
             # this table takes medians (see its text), not the best run
             header.replace(f"Best of {repeats} interleaved runs", f"Medians of {repeats} interleaved runs").replace(
                 " (other jobs", f", at the end {os.getloadavg()[0]:.1f} (other jobs"))
    return 0


def met_auto(ratios: dict) -> str:
    return "met" if min(ratios.values()) >= TARGET_AUTO_VS_PLAIN else "not met"


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
