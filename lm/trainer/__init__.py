"""The training driver (one loop for pretraining, SFT, DPO and GRPO) and pretraining on it.

Sits above `lm.train` (steps, state, checkpoints) and `lm.parallel` (meshes, plans) in the
import graph; `lm.align`'s loops and the experiments call it.

    from lm.trainer import Loop, RunOptions, fit, train
    result = train(TrainConfig(steps=200), data, "runs/x")      # pretraining
    result = fit(Loop(step, batches, evaluate), state, train_config, "runs/y")   # any other step
"""

from lm.trainer.fine_tune import FineTunePlan, FineTuneResult, fine_tune_plan
from lm.trainer.log import MetricsLog, read_history
from lm.trainer.loop import Loop, RunOptions, TrainResult, fit
from lm.trainer.pretrain import evaluate, pretrain_plan, train
from lm.trainer.run_dir import data_fingerprint, prepare_run

__all__ = ["FineTunePlan", "FineTuneResult", "Loop", "MetricsLog", "RunOptions", "TrainResult", "data_fingerprint",
           "evaluate", "fine_tune_plan", "fit", "prepare_run", "pretrain_plan", "read_history", "train"]
