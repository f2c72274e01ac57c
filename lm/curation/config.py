"""The curation pipeline's settings (one frozen tree; every field is a CLI flag)."""

from __future__ import annotations

import dataclasses

from lm.curation.near_dedup import MinHashConfig


@dataclasses.dataclass(frozen=True)
class CurationConfig:
    input: str = dataclasses.field(default="", metadata={"help": "WARC/WET files: a glob, or several joined by ','"})
    out: str = dataclasses.field(default="", metadata={"help": "output directory"})
    languages: tuple[str, ...] = dataclasses.field(default=("en",), metadata={
        "help": "languages to keep (ISO 639-1); none keeps all", "flag": "--language"})
    min_language_score: float = 0.5
    langid_backend: str = dataclasses.field(default="fasttext", metadata={"help": "fasttext, langid or cld2"})
    langid_model: str = dataclasses.field(default="", metadata={
        "help": "fastText language-id .bin (default: bundled lid.176.ftz)"})
    main_content: bool = dataclasses.field(default=False, metadata={"help": "resiliparse main-content heuristics"})
    gopher: bool = True
    gopher_repetition: bool = dataclasses.field(default=False, metadata={
        "help": "Gopher repetition rules (duplicate lines/paragraphs/n-grams)"})
    c4: bool = dataclasses.field(default=False, metadata={"help": "C4 line filters and page rules"})
    fineweb: bool = dataclasses.field(default=False, metadata={"help": "FineWeb line-quality rules"})
    decontaminate: str = dataclasses.field(default="", metadata={
        "help": "benchmark files or folders (JSONL/JSON/CSV), joined by ','; documents sharing an n-gram go"})
    decontam_ngram: int = 13
    decontam_action: str = dataclasses.field(default="remove", metadata={"help": "remove, or flag (meta only)"})
    toxic: bool = dataclasses.field(default=True, metadata={
        "help": "drop toxic pages (default model: alt-profanity-check)"})
    toxic_model: str = dataclasses.field(default="", metadata={"help": "fastText toxic classifier .bin instead"})
    nsfw_model: str = dataclasses.field(default="", metadata={
        "help": "fastText NSFW classifier .bin (no offline default)"})
    harmful_threshold: float = 0.9
    quality_model: str = dataclasses.field(default="", metadata={
        "help": "fastText quality classifier (train_quality_classifier)"})
    min_quality: float = 0.5
    mask_pii: bool = True
    line_dedup: bool = True
    fuzzy_dedup: bool = True
    minhash: MinHashConfig = dataclasses.field(default_factory=MinHashConfig)
    tokenize: bool = True
    tokenizer: str = dataclasses.field(default="", metadata={
        "help": "tokenizer directory (default: train one on the clean text)"})
    vocab_size: int = 4096
    val_fraction: float = 0.05
    workers: int = 0  # 0: all cores
    ray: str = dataclasses.field(default="", metadata={
        "help": "Ray address ('local' starts one here); empty: processes"})
    max_samples: int = 5  # removed documents kept as samples per stage and reason
    canaries: int = dataclasses.field(default=0, metadata={
        "help": "plant this many near-duplicate pairs per Jaccard bucket (0.50-0.95) and report their recall"})
    canary_benchmark_items: int = dataclasses.field(default=5, metadata={
        "help": "with --canaries and --decontaminate: benchmark items planted per benchmark"})
    canary_seed: int = 0
    keep_work: bool = dataclasses.field(default=False, metadata={"help": "keep OUT/work after a finished run"})

    def __post_init__(self):
        if not 0 <= self.min_language_score <= 1:
            raise ValueError(f"min_language_score must be in [0, 1], got {self.min_language_score}")
        if self.langid_backend not in ("fasttext", "langid", "cld2"):
            raise ValueError(f"langid_backend must be fasttext, langid or cld2, got {self.langid_backend!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.decontam_action not in ("remove", "flag"):
            raise ValueError(f"decontam_action must be remove or flag, got {self.decontam_action!r}")
        if self.decontam_ngram < 1:
            raise ValueError(f"decontam_ngram must be >= 1, got {self.decontam_ngram}")
        if self.canaries < 0 or self.canary_benchmark_items < 0:
            raise ValueError("canaries and canary_benchmark_items must be >= 0")
        if self.vocab_size < 257:
            raise ValueError(f"vocab_size must exceed the 256 byte tokens, got {self.vocab_size}")
