"""What every alignment experiment (SFT, DPO, GRPO) shares: where the policy comes from, the task, the
held-out split and the run directory.

    class SFTRun(AlignRun): ...                  # adds its own fields (name, sft config, ...)
    setup = prepare(config)                      # policy, tokenizer, train/held-out problems, run_dir
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from lm.align.tasks import TASKS, Task


@dataclasses.dataclass(frozen=True)
class AlignRun:
    init: str = dataclasses.field(default="", metadata={"help": "run directory or Hugging Face checkpoint dir"})
    task: str = dataclasses.field(default="arithmetic-qa", metadata={"help": f"one of {sorted(TASKS)}"})
    data_dir: str = dataclasses.field(default="", metadata={"help": "GSM8K directory (gsm8k tasks)"})
    n_train: int = 20_000
    n_eval: int = 200
    eval_batch_size: int = 64
    out: str = "runs"
    name: str = "align"
    save: bool = True

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {sorted(TASKS)}")
        for name in ("n_train", "n_eval", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be positive, got {getattr(self, name)}")


class RunSetup(NamedTuple):
    task: Task
    params: dict
    model: object  # lm.model.ModelConfig
    tokenizer: object
    train: list[dict]
    held: list[dict]
    run_dir: Path


def prepare(config: AlignRun) -> RunSetup:
    """Load the policy named by `config.init` and draw the task's training and held-out problems."""
    from lm.align.checkpoint import load_policy
    from lm.align.tasks import task_problems

    if not config.init:
        raise ValueError("--init is required: a run directory (runs/NAME) or a Hugging Face checkpoint dir")
    task = TASKS[config.task]
    params, model, tokenizer = load_policy(config.init)
    held = task_problems(task, "test", config.n_eval, config.data_dir)
    train = task_problems(task, "train", config.n_train, config.data_dir)
    run_dir = Path(config.out) / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunSetup(task, params, model, tokenizer, train, held, run_dir)
