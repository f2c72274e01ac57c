"""Generate text from a trained run, streaming tokens to the terminal as they are produced.

    python -m experiments.generate --run runs/default-tiny --prompt "The "
    python -m experiments.generate --run runs/big --prompt "The " --temperature 0 --draft runs/small --draft-len 4
    python -m experiments.generate --run runs/big --prompt "The " --draft runs/small --draft-len auto

The prompt and completion go to stdout; a one-line summary (tokens, speed)
goes to stderr. The decode loop runs on the device `chunk`
tokens at a time between prints. From a notebook:

    from experiments.generate import GenerateConfig, generate_text
    result = generate_text(GenerateConfig(run="runs/default-tiny", prompt="The "))   # {"text", ...}
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import sys
import time
from typing import TextIO

from lm.cli_env import prepare_process
from lm.config import add_dataclass_args, dataclass_from_args
from lm.inference.sampling import SamplingConfig


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    run: str = dataclasses.field(default="", metadata={"help": "run directory (runs/NAME) to load"})
    prompt: str = "The "
    max_new_tokens: int = 128
    temperature: float = 0.8  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # in (0, 1]; 1: off
    seed: int = 0
    step: int = dataclasses.field(default=-1, metadata={"help": "checkpoint step (-1: latest)"})
    chunk: int = dataclasses.field(default=8, metadata={"help": "decode steps per device round trip"})
    draft: str = dataclasses.field(default="", metadata={
        "help": "run directory of a draft model: speculative decoding"})
    draft_len: str = dataclasses.field(default="4", metadata={
        "help": "tokens the draft proposes per round, or 'auto': measure as it goes and pick the length, or decode "
                "plainly when the draft does not pay"})

    def __post_init__(self):
        if not self.run:
            raise ValueError("--run is required: a run directory such as runs/default-tiny")
        if self.chunk < 1:
            raise ValueError(f"--chunk must be positive, got {self.chunk}")
        if self.draft_len != "auto" and not (str(self.draft_len).isdigit() and int(self.draft_len) >= 1):
            raise ValueError(f"--draft-len must be a positive integer or 'auto', got {self.draft_len!r}")

    @property
    def draft_length(self) -> int | str:
        """The draft length for `speculative_stream`: a positive int, or "auto"."""
        return "auto" if self.draft_len == "auto" else int(self.draft_len)

    def sampling(self, stop_ids: tuple[int, ...] = ()) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, stop_ids=stop_ids, seed=self.seed)


def generate_text(config: GenerateConfig, out: TextIO | None = None, quiet: bool = False) -> dict:
    """Load the run, stream the completion to `out` (default stdout) unless `quiet`;
    returns {"text", "tokens", "seconds", "prompt_tokens"} (and "draft_lengths" with --draft-len auto)."""
    from lm.inference.draft_tuner import DraftTuner
    from lm.inference.generate import stop_ids_for, stream_ids
    from lm.inference.load import load_run
    from lm.inference.speculative import speculative_stream

    sampling = config.sampling()  # validate before loading anything
    step = None if config.step < 0 else config.step
    params, model_config, tokenizer = load_run(config.run, step)
    prompt = tokenizer.encode(config.prompt)
    if not prompt:
        raise ValueError("the prompt is empty; give some text with --prompt")
    sampling = stop_ids_for(tokenizer, sampling)
    tuner = DraftTuner() if config.draft and config.draft_length == "auto" else None
    if config.draft:
        dparams, dconfig, _ = load_run(config.draft, tokenizer=False)
        chunks = speculative_stream(params, model_config, dparams, dconfig, prompt, sampling,
                                    config.draft_length, config.chunk, tuner=tuner)
    else:
        chunks = (rows[0] for rows in stream_ids(params, model_config, [prompt], sampling, config.chunk))
    out = None if quiet else (out or sys.stdout)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    if out is not None:
        out.write(config.prompt)
        out.flush()
    ids: list[int] = []
    pieces = []
    t0 = time.perf_counter()
    for new in chunks:
        ids += new
        piece = utf8.decode(tokenizer.decode_bytes(new))
        pieces.append(piece)
        if out is not None and piece:
            out.write(piece)
            out.flush()
    pieces.append(utf8.decode(b"", final=True))
    seconds = time.perf_counter() - t0
    if out is not None:
        out.write(pieces[-1] + "\n")
        out.flush()
    result = {"text": "".join(pieces), "tokens": ids, "seconds": seconds, "prompt_tokens": len(prompt)}
    if tuner is not None:
        result["draft_lengths"] = list(tuner.history)  # --draft-len auto: the length of each segment, 0 for plain
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_args(parser, GenerateConfig)
    args = parser.parse_args(argv)
    try:
        config = dataclass_from_args(GenerateConfig, args)
        result = generate_text(config)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(result["tokens"])
    print(f"[{n} tokens in {result['seconds']:.2f} s, {n / max(result['seconds'], 1e-9):.1f} tokens/s "
          f"including compilation"
          + (f"; draft lengths per segment {result['draft_lengths']}" if "draft_lengths" in result else "")
          + "]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
