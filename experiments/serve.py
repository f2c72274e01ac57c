"""Serve a model over an OpenAI-compatible HTTP API (continuous batching over a paged KV cache).

    python -m experiments.serve --run runs/default-tiny                       # one of our runs
    python -m experiments.serve --hf-dir runs/smollm2-135m-instruct --port 8000 --engine.slots 16
    curl localhost:8000/v1/completions -H 'content-type: application/json' \\
        -d '{"model": "smollm2-135m-instruct", "prompt": "The ", "max_tokens": 32, "stream": true}'

Endpoints: /v1/completions, /v1/chat/completions (the model's chat template; HF directories carry
one, our own runs do not), /v1/models, /health; see `lm.inference.server`. Ctrl-C (or SIGTERM)
shuts down gracefully: running requests finish, new ones are refused. From Python:

    from experiments.serve import ServeConfig, build_app
    app = build_app(ServeConfig(run="runs/default-tiny"))     # a FastAPI app, for any ASGI server
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from lm.cli_env import prepare_process
from lm.config import check_positive, cli
from lm.inference.engine import Engine, EngineConfig
from lm.inference.load import load_run
from lm.inference.server import make_app


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    run: str = dataclasses.field(default="", metadata={"help": "run directory (runs/NAME) to serve"})
    hf_dir: str = dataclasses.field(default="", metadata={"help": "a Hugging Face Llama/Qwen2 directory instead"})
    dtype: str = dataclasses.field(default="float32", metadata={"help": "float32 or bfloat16 (--hf-dir)"})
    model_name: str = dataclasses.field(default="", metadata={"help": "the name clients ask for (default: the "
                                                                      "directory's name)"})
    host: str = "127.0.0.1"
    port: int = 8000
    engine: EngineConfig = EngineConfig()
    max_queue: int = dataclasses.field(default=64, metadata={"help": "requests waiting or running before 503s"})
    shutdown_timeout: float = dataclasses.field(default=30.0, metadata={"help": "seconds running requests get to "
                                                                                 "finish on shutdown"})
    default_max_tokens: int = dataclasses.field(default=256, metadata={"help": "chat max_tokens when unset"})

    def __post_init__(self):
        if bool(self.run) == bool(self.hf_dir):
            raise ValueError("give exactly one of --run DIR (one of our runs) or --hf-dir DIR (a Hugging Face model)")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--dtype must be float32 or bfloat16, got {self.dtype!r}")
        check_positive(self, "port", "max_queue", "default_max_tokens")

    @property
    def name(self) -> str:
        return self.model_name or Path(self.run or self.hf_dir).resolve().name


def load(config: ServeConfig):
    """(params, ModelConfig, tokenizer) of the run or Hugging Face directory."""
    if config.run:
        return load_run(config.run)
    # lm.interop needs the `hf` extra; only --hf-dir asks for it.
    from lm.interop import load_hf

    params, model_config, tokenizer = load_hf(config.hf_dir, dtype=config.dtype)
    if tokenizer is None:
        raise FileNotFoundError(f"{config.hf_dir} has no tokenizer.json; the server needs the tokenizer")
    return params, model_config, tokenizer


def build_app(config: ServeConfig):
    params, model_config, tokenizer = load(config)
    engine = Engine(params, model_config, config.engine, tokenizer=tokenizer)
    return make_app(engine, tokenizer, config.name, max_queue=config.max_queue,
                    shutdown_timeout=config.shutdown_timeout, default_max_tokens=config.default_max_tokens)


def serve(config: ServeConfig) -> None:
    import uvicorn  # the `serve` extra

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app = build_app(config)
    print(f"serving {config.name!r} on http://{config.host}:{config.port}/v1", flush=True)
    uvicorn.run(app, host=config.host, port=config.port, timeout_graceful_shutdown=int(config.shutdown_timeout))


def main(argv=None) -> int:
    return cli(ServeConfig, serve, argv, base=lambda _: None)  # no defaults instance: --run/--hf-dir is required


if __name__ == "__main__":
    prepare_process()
    raise SystemExit(main())
