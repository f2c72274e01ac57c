"""Loss, train state, jitted steps, checkpoints and the training loop."""

from lm.train.config import TrainConfig
from lm.train.loop import TrainResult, evaluate, train
from lm.train.loss import cross_entropy, perplexity
from lm.train.report import format_report, plan_report
from lm.train.step import eval_step, init_state, loss_fn, train_step

__all__ = ["TrainConfig", "TrainResult", "cross_entropy", "eval_step", "evaluate", "format_report", "init_state",
           "loss_fn", "perplexity", "plan_report", "train", "train_step"]
