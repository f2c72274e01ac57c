"""Data curation: web archives (WARC/WET) to clean, deduplicated training tokens.

One module per stage, each a plain function over text or documents:
reading (read_warc), extract (extract_text), language (identify_language), pii (mask_pii),
harmful (load_harmful_classifier, harmful_filter), gopher (gopher_filter), repetition
(repetition_filter: Gopher's repetition rules), c4 (c4_filter), fineweb (fineweb_filter), quality
(train_quality_classifier, quality_score), decontaminate (build_benchmark_indexes, contamination),
exact_dedup (exact_line_dedup), minhash / lsh / near_dedup (minhash_signatures, fuzzy_dedup) and
disk_lsh (the same buckets streamed from sorted shard files), canaries, resume (completion markers),
pipeline (run_curation), tokens (tokenize_documents). The optional packages (`pip install -e '.[curation]'`)
are imported only when a stage runs, so `import lm.curation` always works.

No submodule shares a name with an export: importing a submodule binds its name on the package,
which would shadow the lazy export (`from lm.curation import fuzzy_dedup` must give the function).
"""

import importlib

_EXPORTS = {
    "Document": "document", "read_warc": "reading", "Record": "reading", "extract_text": "extract",
    "identify_language": "language", "mask_pii": "pii", "mask_emails": "pii", "mask_phone_numbers": "pii",
    "mask_ips": "pii", "load_harmful_classifier": "harmful", "harmful_filter": "harmful",
    "gopher_filter": "gopher", "train_quality_classifier": "quality", "quality_score": "quality",
    "exact_line_dedup": "exact_dedup", "minhash_signatures": "minhash", "fuzzy_dedup": "near_dedup",
    "MinHashConfig": "near_dedup", "CurationConfig": "config", "run_curation": "pipeline",
    "tokenize_documents": "tokens", "repetition_filter": "repetition", "c4_filter": "c4",
    "fineweb_filter": "fineweb", "build_benchmark_indexes": "decontaminate", "contamination": "decontaminate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lm.curation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lm.curation' has no attribute {name!r}")
