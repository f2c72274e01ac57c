"""Loss, train state, jitted steps and checkpoints (the loop that runs them is `lm.trainer`)."""

from lm.train.config import TrainConfig
from lm.train.loss import cross_entropy, perplexity
from lm.train.state import TrainState
from lm.train.step import eval_step, fine_tune_state, init_state, loss_fn, train_step

__all__ = ["TrainConfig", "TrainState", "cross_entropy", "eval_step", "fine_tune_state", "init_state", "loss_fn",
           "perplexity", "train_step"]
