"""The one metrics log of a run: metrics.jsonl, TensorBoard events and the progress bar.

    log = MetricsLog(run_dir / "metrics.jsonl", total=1000, start=0, name="training")
    log.write({"step": 10, "loss": 3.2, "tokens_per_s": 9000.0, "mfu": 0.12})
    log.history            # every record of the run so far, those before a resume included
    log.close()

On resume the records past the checkpoint are dropped (they belong to steps that will be
trained again), by writing the kept ones beside the file and renaming it over the old one:
a kill at any moment leaves the old history or the new one, never an empty file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from lm.train.files import atomic_write_text


def _tensorboard_writer(directory: Path):
    """A tensorboardX writer (`tensorboard --logdir runs` reads it)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError("tensorboard=True needs tensorboardX: pip install -e '.[tensorboard]' "
                          "(or leave tensorboard off; metrics.jsonl has the same numbers)") from None
    return SummaryWriter(str(directory))


def read_history(path: Path, upto: int | None = None) -> list[dict]:
    """Records of a metrics.jsonl with step <= `upto` (all when None); a torn last line is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut by a kill
            continue
    return [r for r in records if upto is None or r.get("step", 0) <= upto]


def _format(key: str, value: float) -> str:
    if key == "mfu":
        return f"{value:.1%}"
    if key.startswith("tokens_per_s"):
        return f"{value:,.0f}"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


class MetricsLog:
    """Writes records to JSONL (flushed per record), TensorBoard (optional) and a tqdm bar (with ETA)."""

    def __init__(self, path: Path | None, total: int, start: int = 0, name: str = "training",
                 tensorboard: Path | None = None, progress: bool = True, bar_keys=("loss", "tokens_per_s", "mfu")):
        self.path, self.bar_keys = path, bar_keys
        self.history = read_history(path, start) if path is not None and start > 0 else []
        self.file = None
        if path is not None:
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.history))
            self.file = open(path, "a")
        self.tb = _tensorboard_writer(tensorboard) if tensorboard is not None else None
        self.bar = tqdm(total=total, initial=start, desc=name, unit="step", disable=not progress,
                        dynamic_ncols=True)

    def write(self, record: dict) -> None:
        self.history.append(record)
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])
        shown = {k: _format(k, record[k]) for k in self.bar_keys if k in record}
        if shown:
            self.bar.set_postfix(shown)

    def message(self, text: str) -> None:
        self.bar.write(text)

    def advance(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()
