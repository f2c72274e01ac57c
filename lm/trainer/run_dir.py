"""The run directory's guard rails: never overwrite a run by accident, never resume on other data.

    fingerprint = data_fingerprint("data/train.npy", tokens)       # path, size, hash of a sample
    prepare_run(run_dir, resume=False, overwrite=False, data=fingerprint, config=record)

`run.json` records the training data's fingerprint and the config of the run; it is written
atomically when the run starts (and again when a resume is allowed onto changed data).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from lm.train.files import atomic_write_json

RUN_FILE = "run.json"


def data_fingerprint(source: str | os.PathLike, data) -> dict:
    """{"source", "size", "sample_sha1"} of training data: an array (tokens) or a list of JSON-able
    items (problems). The hash covers 16 evenly spaced slices of 4,096 items, so it is fast on any
    size and still changes when the data does."""
    if isinstance(data, np.ndarray):
        n, chunks = len(data), []
        for i in range(16):
            lo = (n * i) // 16
            chunks.append(np.ascontiguousarray(data[lo: lo + 4096]).tobytes())
        sample = b"".join(chunks)
    else:
        items = list(data)
        n = len(items)
        sample = repr([items[(n * i) // 16] for i in range(16) if n]).encode()
    return {"source": str(source), "size": int(n), "sample_sha1": hashlib.sha1(sample).hexdigest()}


def has_checkpoints(run_dir: Path) -> bool:
    ckpt = run_dir / "checkpoints"
    return ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())


def _check_data(run_dir: Path, saved: dict | None, data: dict, allow_change: bool) -> None:
    if not saved or saved == data:
        return
    changed = [k for k in sorted(set(saved) | set(data)) if saved.get(k) != data.get(k)]
    what = ", ".join(f"{k} {saved.get(k)!r} -> {data.get(k)!r}" for k in changed)
    if not allow_change:
        raise ValueError(f"{run_dir} was trained on other data than this resume gives it ({what}). Resume with "
                         "the run's own data, start a new run (--name), or pass --allow-data-change true to "
                         "continue on the new data on purpose")
    print(f"warning: continuing {run_dir} on changed training data ({what})", flush=True)


def prepare_run(run_dir: str | os.PathLike, *, resume: bool, overwrite: bool, data: dict | None = None,
                config: dict | None = None, allow_data_change: bool = False, write: bool = True) -> Path:
    """Check that `run_dir` may be used as asked, before anything in it is written.

    A directory holding checkpoints is continued only with `resume` and replaced only with
    `overwrite` (its checkpoints are then deleted); anything else is a ValueError that names the
    run and both options. On resume, `data` must match the fingerprint the run recorded unless
    `allow_data_change`. Records `data` and `config` in run.json (when `write`)."""
    run_dir = Path(run_dir)
    record_path = run_dir / RUN_FILE
    saved = _read(record_path)
    if has_checkpoints(run_dir) and not resume:
        if not overwrite:
            raise ValueError(f"run directory {run_dir} already holds checkpoints of a run; pass --resume true to "
                             f"continue it, or --overwrite true to delete it and start again (or pick a new --name)")
        shutil.rmtree(run_dir / "checkpoints")
        saved = None
    if resume and data is not None and saved is not None:
        _check_data(run_dir, saved.get("data"), data, allow_data_change)
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(record_path, {"data": data, "config": config})
    return run_dir


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
