"""Inference: a KV cache, sampling, batched generation, speculative decoding, and run loading.

    from lm.inference import SamplingConfig, generate, load_run
    params, config, tokenizer = load_run("runs/default-tiny")
    texts = generate(params, config, tokenizer, ["The ", "Once"], SamplingConfig(temperature=0.8))

Modules: `cache` (KVCache, extend), `sampling`, `generate` (batched, left-padded, on-device loop),
`speculative` (draft-and-verify), `load` (a run directory -> params, config, tokenizer), `segments`
(the layer-scanned pass over key/value segments that the evaluation scorer uses), `naive` (the
no-cache reference sampler), and the serving engine: `paged` (a paged KV cache), `pages` (free list,
refcounts, prefix sharing by block hash), `request` and `engine` (continuous batching), `server`
(the OpenAI-compatible HTTP API, `experiments.serve`; needs the `serve` extra), and `draft_tuner`
(speculative decoding's `k="auto"`).

    engine = Engine(params, config, EngineConfig(slots=8), tokenizer=tokenizer)
    done = engine.generate([Request(ids, SamplingConfig(temperature=0.7, seed=i)) for i in range(8)])
"""

from lm.inference.cache import KVCache, extend, init_cache, rewind
from lm.inference.draft_tuner import DraftTuner
from lm.inference.engine import Engine, EngineConfig
from lm.inference.generate import generate, generate_ids, stream_ids
from lm.inference.load import load_run
from lm.inference.request import Request
from lm.inference.sampling import SamplingConfig
from lm.inference.speculative import SpecResult, speculative_generate, speculative_stream

__all__ = ["DraftTuner", "Engine", "EngineConfig", "KVCache", "Request", "SamplingConfig", "SpecResult", "extend",
           "generate", "generate_ids", "init_cache", "load_run", "rewind", "speculative_generate", "speculative_stream",
           "stream_ids"]
