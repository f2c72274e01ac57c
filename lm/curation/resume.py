"""Resumable runs: atomic files, per-shard completion markers, and the settings a run was started with.

Every output is written beside its final name and renamed into place, and each shard's task writes
its marker (a small JSON file holding the task's statistics) last. A marker therefore proves its
outputs are complete, and a rerun of the same command runs only the tasks without one. The run's
settings are saved in OUT/work/settings.json; a rerun with different settings (other than the
executor: workers and Ray do not change the output) is refused, naming the fields that differ.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

# Fields that choose how a run executes, not what it outputs.
EXECUTION_FIELDS = ("workers", "ray", "keep_work")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_marker(path: str | os.PathLike, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, ensure_ascii=False))


def read_marker(path: str | os.PathLike) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def settings_of(config) -> dict:
    """The output-determining settings of a run (a frozen dataclass), as JSON-ready values."""
    d = dataclasses.asdict(config)
    for k in EXECUTION_FIELDS:
        d.pop(k, None)
    return json.loads(json.dumps(d))


def check_settings(path: str | os.PathLike, settings: dict) -> None:
    """Save `settings` at `path`, or check them against the ones saved by an earlier run there."""
    old = read_marker(path)
    if old is None:
        write_marker(path, settings)
        return
    changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if changed:
        raise ValueError(f"{Path(path).parent.parent} holds an unfinished run started with other settings "
                         f"({', '.join(f'{k}: {old.get(k)!r} -> {settings.get(k)!r}' for k in changed)}); "
                         "rerun with the same settings to resume it, or choose another --out")
