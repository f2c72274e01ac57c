"""Evaluation: perplexity and bits per byte, multiple-choice log-likelihood (MMLU), generative GSM8K,
GSM8K gold-answer bits per byte, open-ended generation for judging; error bars, resumable runs, contamination.

    from lm.eval import perplexity, evaluate_mmlu, evaluate_gsm8k
    r = perplexity(params, config, ids, stride=64, n_bytes=len(text.encode()))
    r = evaluate_mmlu(params, config, tokenizer, data_dir / "mmlu", split="val", shots=5)
    r = evaluate_gsm8k(params, config, tokenizer, data_dir / "gsm8k", limit=200)

Modules: `scoring` (batched log-likelihoods over a shared-prefix KV cache, a
row's result independent of its batch; perplexity windows), `perplexity`
(sliding windows), `multiple_choice` (acc and acc_norm), `mmlu`,
`generation` (batched decoding to a stop string), `gsm8k` (exact match and
gold-answer bits per byte), `open_ended` (AlpacaEval, SimpleSafetyTests),
`stats` (standard errors, bootstrap intervals, paired differences, McNemar),
`resume` (per-example records keyed by model and settings), `memory`
(`--batch-size auto`), `contamination` (n-gram overlap with training data),
`report` (JSON, per-example records, Markdown) and `paths` (where the shared
data lives). The command line is `python -m experiments.eval`.
"""

from lm.eval.gsm8k import evaluate_gsm8k, load_gsm8k
from lm.eval.mmlu import evaluate_mmlu, load_mmlu, mmlu_examples
from lm.eval.multiple_choice import Choice, evaluate_choices
from lm.eval.paths import default_eval_data_dir, shared_dir
from lm.eval.perplexity import perplexity, sliding_windows
from lm.eval.report import markdown_table, write_results
from lm.eval.scoring import score_continuations, window_nll
from lm.eval.stats import accuracy_summary, paired_difference

__all__ = ["Choice", "accuracy_summary", "default_eval_data_dir", "evaluate_choices", "evaluate_gsm8k",
           "evaluate_mmlu", "load_gsm8k", "load_mmlu", "markdown_table", "mmlu_examples", "paired_difference",
           "perplexity", "score_continuations", "shared_dir", "sliding_windows", "window_nll", "write_results"]
