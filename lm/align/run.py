"""What every alignment experiment (SFT, DPO, GRPO) shares: where the policy comes from, the task, the
held-out split and the run directory.

    class SFTRun(AlignRun): ...                  # adds its own fields (name, sft config, ...)
    setup = prepare(config)                      # policy, tokenizer, train/held-out problems, run_dir
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from lm.align.checkpoint import load_policy
from lm.align.tasks import TASKS, Task, task_problems
from lm.config import check_positive
from lm.tokenizer import save_tokenizer
from lm.trainer import RunOptions, prepare_run


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
    save: bool = dataclasses.field(default=True, metadata={"help": "keep checkpoints (the tuned policy; resume)"})
    resume: bool = dataclasses.field(default=False, metadata={"help": "continue from the run's latest checkpoint"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "delete the run's checkpoints, start again"})
    allow_data_change: bool = dataclasses.field(default=False, metadata={
        "help": "resume even though the training problems differ from the run's"})

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose one of {sorted(TASKS)}")
        check_positive(self, "n_train", "n_eval", "eval_batch_size")

    def options(self, progress: bool = True) -> RunOptions:
        return RunOptions(resume=self.resume, overwrite=self.overwrite, allow_data_change=self.allow_data_change,
                          progress=progress, checkpoints=self.save)


class RunSetup(NamedTuple):
    task: Task
    params: dict
    model: object  # lm.model.ModelConfig
    tokenizer: object
    train: list[dict]
    held: list[dict]
    run_dir: Path


def prepare(config: AlignRun) -> RunSetup:
    """Load the policy named by `config.init` and draw the task's training and held-out problems; the
    run directory is checked first (lm.trainer.prepare_run), so a refused run loads nothing. The
    tokenizer is saved there, so that the run's checkpoints load as a policy (`load_policy`)."""
    if not config.init:
        raise ValueError("--init is required: a run directory (runs/NAME) or a Hugging Face checkpoint dir")
    run_dir = Path(config.out) / config.name
    prepare_run(run_dir, resume=config.resume, overwrite=config.overwrite, write=False)
    task = TASKS[config.task]
    params, model, tokenizer = load_policy(config.init)
    held = task_problems(task, "test", config.n_eval, config.data_dir)
    train = task_problems(task, "train", config.n_train, config.data_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.save and hasattr(tokenizer, "merges"):
        save_tokenizer(tokenizer, run_dir)
    return RunSetup(task, params, model, tokenizer, train, held, run_dir)
