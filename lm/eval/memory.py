"""`--batch-size auto`: the largest scoring batch whose compiled programs fit a memory budget.

    rows = auto_batch_size(params, config, widths, budget_bytes, cache=Path("runs/eval/batch_size_cache.json"),
                           key="3f2a...-mmlu")

XLA reports, for a compiled program, the bytes of its arguments, outputs and
temporaries (`Compiled.memory_analysis`), without running it. The batch size
doubles from 1 while the scorer's two programs at the task's widest shapes
(prefix, rest and continuation widths) fit in the budget; the answer is
stored in a small JSON cache under the key given (model fingerprint, task,
widths, budget, backend), so the compiles happen once per model and task.
The default budget is 80% of an accelerator's memory, or a quarter of the
free host memory on CPU (the machine is shared).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lm.eval.scoring import _cont_width, _prefix_width, _programs, _round_up
from lm.model import ModelConfig

MAX_ROWS = 512


class Widths(NamedTuple):
    prefix: int  # padded shared-prefix width (0: none)
    rest: int  # padded width of a row's own context
    cont: int  # padded continuation width (1: single tokens)
    choices: int  # continuations per request


def widest(requests, shared_lens) -> Widths:
    """The largest padded widths the scorer will use for these requests (as `score_continuations` pads)."""
    prefix = max((s for s in shared_lens), default=0)
    rest = max(len(ctx) - s for (ctx, _), s in zip(requests, shared_lens))
    return Widths(_prefix_width(prefix) if prefix else 0, _round_up(rest, 2),
                  max(_cont_width(conts) for _, conts in requests), max(len(conts) for _, conts in requests))


def batch_bytes(params, config: ModelConfig, rows: int, w: Widths) -> int:
    """Peak bytes (arguments + outputs + temporaries) of scoring one batch of `rows` at widths `w`."""
    p = _programs()
    i32 = jnp.int32
    spec = jax.ShapeDtypeStruct
    segments = ()
    total = 0
    if w.prefix:
        prefix = (spec((1, w.prefix), i32), spec((), i32))
        compiled = p["_read_prefix"].lower(params, *prefix, config=config).compile()
        total += compiled.memory_analysis().output_size_in_bytes
        segments = (p["_read_prefix"].eval_shape(params, *prefix, config=config),)
    rest = (spec((rows, w.rest), i32), spec((rows,), i32), spec((), i32))
    m_read = p["_read_rows"].lower(params, *rest, segments, config=config).compile().memory_analysis()
    last, seg = p["_read_rows"].eval_shape(params, *rest, segments, config=config)
    choice_args = ((*segments, seg), last, spec((rows,), i32), spec((rows, w.choices, w.cont), i32),
                   spec((rows, w.choices), i32))
    m_choice = p["_score_choices"].lower(params, *choice_args, config=config).compile().memory_analysis()
    # Params are an argument of both; the rows' segment is the first's output and the second's argument.
    return total + m_read.argument_size_in_bytes + max(
        m_read.temp_size_in_bytes + m_read.output_size_in_bytes,
        m_read.output_size_in_bytes + m_choice.temp_size_in_bytes + m_choice.output_size_in_bytes)


def default_budget() -> int:
    """80% of the first device's memory limit if it reports one, else a quarter of free host memory."""
    stats = jax.devices()[0].memory_stats() or {}
    if stats.get("bytes_limit"):
        return int(0.8 * stats["bytes_limit"])
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4)


def auto_batch_size(params, config: ModelConfig, w: Widths, budget: int, cache: str | Path | None = None,
                    key: str = "") -> int:
    """The largest power of two <= MAX_ROWS whose batch fits `budget` bytes (at least 1), cached under `key`."""
    full_key = json.dumps([key, list(w), budget, jax.default_backend()])
    cache = Path(cache) if cache else None
    stored = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    if full_key in stored:
        return int(stored[full_key])
    rows = 1
    while rows * 2 <= MAX_ROWS and batch_bytes(params, config, rows * 2, w) <= budget:
        rows *= 2
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        stored = json.loads(cache.read_text()) if cache.is_file() else {}
        cache.write_text(json.dumps({**stored, full_key: rows}, indent=1) + "\n")
    return rows
