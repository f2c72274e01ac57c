"""Pretrain a language model: text -> tokenizer -> token arrays -> training -> sample.

    python -m experiments.pretrain                       # embedded default, no download
    python -m experiments.pretrain --data tinystories.txt --preset tinystories --steps 2000
    python -m experiments.pretrain --tokens DIR          # DIR/train.npy [+ val.npy, tokenizer.json]
    python -m experiments.pretrain --name default-tiny --resume    # continue (or report) a run
    python -m experiments.pretrain --name default-tiny --overwrite  # delete that run and start again
    python -m experiments.pretrain --parallel.fsdp -1     # shard over every device (see lm/parallel)
    python -m experiments.pretrain --preset gpt2-small --batch-size 8 --dry-run   # will it fit? (compiles only)
    python -m experiments.pretrain --parallel.data -1 --coordinator-address host0:1234 \
        --num-processes 2 --process-id 0                  # one of two processes (or JAX_* variables)

With no data option it trains on real English that every Python carries (the
standard library's docstrings and `pydoc_data` topics). Everything is written
under `--out/--name`: tokenizer, token arrays, checkpoints, metrics.jsonl,
loss.png, sample.txt, summary.json and run.json (the data's fingerprint and the config). A
directory that holds checkpoints is continued only with `--resume` and replaced only with
`--overwrite`; a resume on other data than the run's is refused unless `--allow-data-change`.
Documents are kept apart inside each training window
(attention, positions and loss) wherever the tokenizer has `<|endoftext|>`;
`--document_mask false` trains on windows as plain sequences. `--dry-run`
compiles the train step for the chosen model, batch and mesh without data or
arrays and prints parameters, FLOPs and memory per device (lm.train.plan_report).
From a notebook:

    from experiments.pretrain import PretrainConfig, pretrain
    result = pretrain(PretrainConfig(steps=200))
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
from pathlib import Path

from lm.cli_env import prepare_process
from lm.config import cli, format_config, to_dict
from lm.config import parse_config as parse_flags
from lm.model import ModelConfig, get_preset
from lm.train.config import TrainConfig
from lm.train.files import atomic_write_json, atomic_write_text

EOT = "<|endoftext|>"


@dataclasses.dataclass(frozen=True)
class PretrainConfig(TrainConfig):
    """A training run plus where its text comes from. Model fields: `--model.NAME`."""

    model: ModelConfig = dataclasses.field(default_factory=lambda: get_preset("tiny"))
    steps: int = 1200  # about 6 minutes for the tiny preset on a 2-core CPU
    batch_size: int = 16
    eval_every: int = 200
    save_every: int = 400
    preset: str = dataclasses.field(default="tiny", metadata={"help": "model preset the --model.* flags modify"})
    data: str = dataclasses.field(default="", metadata={"help": "raw UTF-8 text to train on (tokenized on the way)"})
    tokens: str = dataclasses.field(default="", metadata={"help": "directory with train.npy [val.npy, tokenizer.json]"})
    val_fraction: float = 0.1
    out: str = "runs"
    name: str = dataclasses.field(default="", metadata={"help": "run name (default: derived from the data)"})
    resume: bool = dataclasses.field(default=False, metadata={"help": "continue from the run's latest checkpoint"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "delete the run's checkpoints, start again"})
    allow_data_change: bool = dataclasses.field(default=False, metadata={
        "help": "resume even though the training data differs from the run's"})
    dry_run: bool = dataclasses.field(default=False, metadata={
        "help": "compile the train step ahead of time, print parameters, FLOPs and memory per device, and exit"})
    sample_prompt: str = "The "
    sample_tokens: int = 64
    # Multi-process runs (lm.parallel.distributed); unset: JAX_COORDINATOR_ADDRESS etc. or one process.
    coordinator_address: str = dataclasses.field(default="", metadata={"help": "host:port of process 0"})
    num_processes: int = dataclasses.field(default=0, metadata={"help": "processes in the run (0: one, or env)"})
    process_id: int = dataclasses.field(default=-1, metadata={"help": "this process's id (-1: from env)"})

    def __post_init__(self):
        super().__post_init__()
        if self.data and self.tokens:
            raise ValueError("give either --data (raw text) or --tokens (encoded arrays), not both")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def train_config(self) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{n: getattr(self, n) for n in names})

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        if self.data:
            return f"{Path(self.data).stem}-{self.preset}"
        if self.tokens:
            return f"{Path(self.tokens).name}-{self.preset}"
        return f"default-{self.preset}"


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]


def prepare_text_data(text_path: Path, vocab_size: int, cache: Path, progress: bool = True):
    """Train (or reuse) a tokenizer on `text_path` and encode it; returns (tokenizer, tokens.npy path)."""
    from lm.tokenizer import Tokenizer, encode_file, load_tokenizer, save_tokenizer, train_bpe

    if not text_path.is_file():
        raise FileNotFoundError(f"training text not found: {str(text_path)!r}")
    d = cache / f"{text_path.stem}-{_file_fingerprint(text_path)}-v{vocab_size}"
    tok_file, ids_file = d / "tokenizer.json", d / "tokens.npy"
    if tok_file.is_file():
        tok = load_tokenizer(tok_file)
    else:
        t0 = time.perf_counter()
        vocab, merges = train_bpe(text_path, vocab_size, [EOT], progress=progress)
        tok = Tokenizer(vocab, merges, [EOT])
        save_tokenizer(tok, tok_file)  # written beside and renamed: a kill leaves no half cache
        print(f"trained a {vocab_size}-token tokenizer in {time.perf_counter() - t0:.1f} s -> {tok_file}")
    if not ids_file.is_file():
        tmp = d / ".tokens.tmp.npy"
        s = encode_file(tok, text_path, tmp, progress=progress)
        os.replace(tmp, ids_file)
        print(f"encoded {s['bytes']:,} bytes into {s['tokens']:,} tokens ({s['bytes_per_token']:.2f} bytes/token)")
    return tok, ids_file


def load_data(config: PretrainConfig, progress: bool = True):
    """(tokenizer or None, TokenData) for the run's data option."""
    from lm.data import TokenData, load_tokens, split_tokens
    from lm.data.embedded import write_embedded_corpus

    cache = Path(config.out) / "_cache"
    if config.tokens:
        d = Path(config.tokens)
        if not (d / "train.npy").is_file():
            raise FileNotFoundError(f"--tokens {str(d)!r} must contain train.npy "
                                    "(and optionally val.npy, tokenizer.json)")
        train_ids = load_tokens(d / "train.npy")
        data = (TokenData(train_ids, load_tokens(d / "val.npy")) if (d / "val.npy").is_file()
                else split_tokens(train_ids, config.val_fraction))
        tok = None
        if (d / "tokenizer.json").is_file():
            from lm.tokenizer import load_tokenizer

            tok = load_tokenizer(d)
    else:
        text = Path(config.data) if config.data else write_embedded_corpus(cache / "embedded_corpus.txt")
        tok, ids_file = prepare_text_data(text, config.model.vocab_size, cache, progress)
        data = split_tokens(load_tokens(ids_file), config.val_fraction)
    top = int(max(data.train.max(initial=0), data.val.max(initial=0)))
    if top >= config.model.vocab_size:
        raise ValueError(f"token id {top} does not fit model.vocab_size={config.model.vocab_size}; "
                         f"pass --model.vocab_size {top + 1} or more")
    return tok, data


def data_source(config: PretrainConfig) -> str:
    """Where the run's training tokens come from, as recorded in its data fingerprint."""
    if config.tokens:
        return str(Path(config.tokens).resolve() / "train.npy")
    return str(Path(config.data).resolve()) if config.data else "embedded standard-library corpus"


def pretrain(config: PretrainConfig = PretrainConfig(), progress: bool = True) -> dict:
    """Run the whole job; returns {"run_dir", "history", "val_loss", "val_perplexity", "sample", "state",
    "complete"} (complete: the run had already finished, so only its numbers were read back)."""
    import jax

    from lm.parallel.distributed import initialize_distributed
    from lm.trainer import data_fingerprint, prepare_run, train

    initialize_distributed(config.coordinator_address, config.num_processes, config.process_id)
    main = jax.process_index() == 0
    run_dir = Path(config.out) / config.run_name
    if jax.process_count() > 1:  # process 0 tokenizes into the cache first; the others then read it
        from jax.experimental.multihost_utils import sync_global_devices

        tok, data = load_data(config, progress) if main else (None, None)
        sync_global_devices("pretrain: data prepared")
        tok, data = (tok, data) if main else load_data(config, progress=False)
    else:
        tok, data = load_data(config, progress)
    if tok is not None and EOT in tok.special_ids and config.eot_token < 0:
        config = dataclasses.replace(config, eot_token=tok.special_ids[EOT])  # packed documents kept apart
    fingerprint = data_fingerprint(data_source(config), data.train)
    run = dict(resume=config.resume, overwrite=config.overwrite, data=fingerprint,
               allow_data_change=config.allow_data_change)
    # Checked before the tokenizer is written: a refused resume must leave the run as it was.
    prepare_run(run_dir, **run, write=False)
    if tok is not None and main:
        from lm.tokenizer import save_tokenizer

        save_tokenizer(tok, run_dir)
    if main:
        docs = (f"documents split at token {config.eot_token}" if config.documents
                else "windows read as plain sequences")
        print(f"model: {config.model.num_params():,} parameters, {config.model.flops_per_token():,} FLOPs/token; "
              f"data: {len(data.train):,} train / {len(data.val):,} validation tokens; {docs}")
    result = train(config.train_config(), data, run_dir, resume=config.resume, overwrite=config.overwrite,
                   progress=progress, fingerprint=fingerprint, allow_data_change=config.allow_data_change,
                   extra_config={"pretrain": {k: v for k, v in to_dict(config).items() if k not in ("model", "optim")}})
    sample = write_sample(config, tok, result.state.params, run_dir)
    summary = {"val_loss": result.final_val_loss, "val_perplexity": result.final_val_perplexity,
               "steps": int(result.state.step)}
    if main:
        atomic_write_json(run_dir / "summary.json", summary)
    return {"run_dir": str(run_dir), "history": result.history, "sample": sample, "state": result.state,
            "complete": result.complete, **summary}


def write_sample(config: PretrainConfig, tok, params, run_dir: Path) -> str:
    """A short sample from the prompt, written to run_dir/sample.txt ("" without a tokenizer)."""
    import jax

    from lm.inference.naive import sample_naive
    from lm.parallel.distributed import to_host

    if tok is None or not config.sample_tokens:
        return ""
    params = to_host(params)  # every process joins the gather of a sharded run
    prompt = tok.encode(config.sample_prompt) or [tok.special_ids[EOT]]
    ids = sample_naive(params, config.model, prompt, config.sample_tokens, jax.random.PRNGKey(config.seed),
                       temperature=0.8, stop_ids=(tok.special_ids[EOT],))
    sample = config.sample_prompt + tok.decode(ids)
    if jax.process_index() == 0:
        atomic_write_text(run_dir / "sample.txt", sample)
    return sample


def _base(args) -> PretrainConfig:
    """Defaults under the flags: the chosen preset's model (the --model.* flags then modify it)."""
    preset = args.preset or PretrainConfig.preset
    return PretrainConfig(model=get_preset(preset), preset=preset)


def parse_config(argv=None) -> PretrainConfig:
    return parse_flags(PretrainConfig, argv, base=_base)


def run(config: PretrainConfig) -> dict | None:
    """What `main` runs: the dry-run report, or the job."""
    print(format_config(config))
    if config.dry_run:
        from lm.train.report import format_report
        from lm.trainer.report import plan_report

        print(format_report(plan_report(config.train_config())))
        return None
    return pretrain(config)


def show(result: dict | None) -> None:
    if result is None:
        return
    if result["complete"]:
        print(f"\n{result['run_dir']} is complete at step {result['steps']}; its final numbers:")
    print(f"\nrun directory: {result['run_dir']}")
    if result["val_loss"] is not None:
        print(f"held-out loss {result['val_loss']:.4f} nats/token, perplexity {result['val_perplexity']:.2f}")
    if result["sample"]:
        print(f"sample: {result['sample']!r}")


def main(argv=None) -> int:
    return cli(PretrainConfig, run, argv, show, base=_base)


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
