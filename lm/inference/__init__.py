"""Inference: a KV cache, sampling, batched generation, speculative decoding, and run loading.

    from lm.inference import SamplingConfig, generate, load_run
    params, config, tokenizer = load_run("runs/default-tiny")
    texts = generate(params, config, tokenizer, ["The ", "Once"], SamplingConfig(temperature=0.8))

Modules: `cache` (KVCache, extend), `sampling`, `generate` (batched, left-padded, on-device loop),
`speculative` (draft-and-verify), `load` (a run directory -> params, config, tokenizer), `segments`
(the layer-scanned pass over key/value segments that the evaluation scorer uses), and `naive` (the
no-cache reference sampler).
"""

from lm.inference.cache import KVCache, extend, init_cache, rewind
from lm.inference.generate import generate, generate_ids, stream_ids
from lm.inference.load import load_run
from lm.inference.sampling import SamplingConfig
from lm.inference.speculative import SpecResult, speculative_generate, speculative_stream

__all__ = ["KVCache", "SamplingConfig", "SpecResult", "extend", "generate", "generate_ids", "init_cache", "load_run",
           "rewind", "speculative_generate", "speculative_stream", "stream_ids"]
