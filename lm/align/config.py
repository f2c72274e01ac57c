"""Frozen configs of the alignment runs (command-line flags through `lm.config`).

Each holds a `train: TrainConfig` (steps, batch size, optimizer, evaluation, checkpoints, parallel
mesh: `--sft.train.optim.lr 1e-4`, `--grpo.train.parallel.fsdp 2`), with fine-tuning defaults: a
short warmup, no weight decay. The model comes from the policy being tuned.
"""

from __future__ import annotations

import dataclasses

from lm.align.policy_gradient import LOSS_PRESETS, PGLossConfig
from lm.align.step import LENGTH_NORMS
from lm.config import check_choice, check_positive, cli
from lm.model import ModelConfig
from lm.model.lora import LoRAConfig
from lm.optim import OptimizerConfig
from lm.train.config import TrainConfig


def _optim(lr: float, warmup: int, schedule: str = "cosine") -> OptimizerConfig:
    return OptimizerConfig(lr=lr, warmup_steps=warmup, schedule=schedule, weight_decay=0.0, min_lr_ratio=0.1)


def fine_tuning(steps: int, batch_size: int, lr: float, warmup: int, schedule: str = "cosine", **kw) -> TrainConfig:
    """A TrainConfig with fine-tuning defaults: no weight decay, evaluation only at the end unless
    asked (`eval_every`), metrics every 10 steps, a checkpoint every 50. Its model is replaced by the
    policy's when the run starts."""
    base = dict(steps=steps, batch_size=batch_size, optim=_optim(lr, warmup, schedule), eval_every=0, log_every=10,
                save_every=50)
    return TrainConfig(**{**base, **kw})


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    """train.batch_size: examples (or packed rows) per optimizer step."""

    train: TrainConfig = dataclasses.field(default_factory=lambda: fine_tuning(200, 32, 1e-3, 20))
    length_norm: str = "token"  # how response-token losses are averaged (lm.align.step.loss_weights)
    norm_constant: float = 0.0  # the divisor for length_norm="constant"
    pack: bool = False  # pack examples into rows of the context length instead of padding each
    lora: LoRAConfig | None = None  # train LoRA adapters only (--sft.lora.rank 8 --sft.lora.targets q,v)

    def __post_init__(self):
        check_choice(self, "length_norm", LENGTH_NORMS)

    def train_config(self, model: ModelConfig) -> TrainConfig:
        return dataclasses.replace(self.train, model=model)


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """train.batch_size: preference pairs per optimizer step; held-out pairs are scored every train.eval_every."""

    train: TrainConfig = dataclasses.field(default_factory=lambda: fine_tuning(100, 32, 3e-4, 10, eval_every=10))
    beta: float = 0.1

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta must be > 0, got {self.beta}")

    def train_config(self, model: ModelConfig) -> TrainConfig:
        return dataclasses.replace(self.train, model=model)


# Flags that moved into GRPOConfig.loss (a PGLossConfig) when the loss options became one nested config.
MOVED_GRPO_FIELDS = {"loss_type": "loss.loss_type", "cliprange": "loss.cliprange_low and loss.cliprange_high",
                     "normalize_std": "loss.normalize_std", "length_norm": "loss.length_norm",
                     "kl_coef": "loss.kl_coef"}


def with_preset(preset: str, loss: PGLossConfig) -> PGLossConfig:
    """LOSS_PRESETS[preset] with the fields of `loss` that differ from PGLossConfig's defaults put on top."""
    default = PGLossConfig()
    explicit = {f.name: getattr(loss, f.name) for f in dataclasses.fields(PGLossConfig)
                if getattr(loss, f.name) != getattr(default, f.name)}
    return dataclasses.replace(LOSS_PRESETS[preset], **explicit)


def check_preset_flags(argv, prefix: str = "grpo.") -> None:
    """Refuse, by name, command-line flags that cannot mean what they say for GRPOConfig:
    the loss flags that moved into `loss.` and a loss flag set to its PGLossConfig default beside a
    preset whose value differs (the two are indistinguishable once parsed, so the preset would win)."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(f"--{prefix}preset", default="")
    loss_flags = {}
    for f in dataclasses.fields(PGLossConfig):
        for spelling in {f.name, f.name.replace("_", "-")}:
            parser.add_argument(f"--{prefix}loss.{spelling}", dest=f"loss_{f.name}", default=None, nargs="?",
                                const="true")
        loss_flags[f.name] = f"--{prefix}loss.{f.name}"
    for old in MOVED_GRPO_FIELDS:
        for spelling in {old, old.replace("_", "-")}:
            parser.add_argument(f"--{prefix}{spelling}", dest=f"moved_{old}", default=None, nargs="?", const="true")
    args, _ = parser.parse_known_args(argv)
    for old, new in MOVED_GRPO_FIELDS.items():
        if getattr(args, f"moved_{old}") is not None:
            raise ValueError(f"--{prefix}{old} moved to --{prefix}{new.replace(' and ', ' and --' + prefix)} "
                             "(the loss options are one nested config, GRPOConfig.loss)")
    preset = getattr(args, f"{prefix}preset")
    if preset not in LOSS_PRESETS:
        return  # no preset, or a bad one that GRPOConfig itself refuses
    default, chosen = PGLossConfig(), LOSS_PRESETS[preset]
    for name, flag in loss_flags.items():
        given = getattr(args, f"loss_{name}")
        if given is None:
            continue
        if _parsed(given, getattr(default, name)) == getattr(default, name) != getattr(chosen, name):
            raise ValueError(f"{flag} {given} is PGLossConfig's default, which cannot override --{prefix}preset "
                             f"{preset} ({name}={getattr(chosen, name)!r}): give the loss flags without the preset")


def grpo_cli(cls, run, argv=None, show=None, prefix: str = "grpo.") -> int:
    """`lm.config.cli` for a config holding a GRPOConfig at `prefix`, after `check_preset_flags`."""
    import sys

    try:
        check_preset_flags(sys.argv[1:] if argv is None else argv, prefix)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return cli(cls, run, argv, show)


def _parsed(text: str, like):
    try:
        return text.lower() in ("1", "true", "yes", "on") if isinstance(like, bool) else type(like)(text)
    except ValueError:
        return text  # not a value of the field's type: the full parse reports it


def _grpo_train() -> TrainConfig:
    return fine_tuning(50, 128, 1e-4, 0, "constant", eval_every=10, log_every=1, save_every=10)


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """One GRPO step: sample `group_size` responses for each of `prompts_per_step` prompts, score them,
    then take `epochs` passes over the rollout batch in optimizer steps of `train.batch_size` rows.
    `train.steps` and `train.eval_every` count rollout steps.

    `loss` holds every policy-gradient option (`lm.align.policy_gradient.PGLossConfig`: aggregation,
    std normalisation, clip ranges, KL, truncation, dynamic sampling); its default aggregates over
    tokens (DAPO, TRL's default). `preset` (one of LOSS_PRESETS: grpo, dr_grpo, dapo, gspo) starts
    `loss` from a published recipe: the loss fields that differ from PGLossConfig's defaults are taken
    as explicit choices and win over the preset's (`--grpo.preset dapo --grpo.loss.cliprange_high 0.3`).
    A field set back to its PGLossConfig default cannot be told from an unset one, so the command line
    refuses that combination by name (`check_preset_flags`).

    `max_staleness` k: the rollouts of step t are sampled by the policy of step max(t - k, 0) (the
    parameters at the start of that step), and the clipped ratio is taken against that behaviour
    policy's log-probs. 0 is on-policy. With `async_rollouts` the next step's rollout is generated in
    a background thread while the current step trains (possible only when k >= 1); the parameters it
    uses are fixed by the step index, so the run is the same with or without the thread.
    """

    train: TrainConfig = dataclasses.field(default_factory=_grpo_train)
    prompts_per_step: int = 16
    group_size: int = 8
    epochs: int = 1  # optimisation passes over each rollout batch (> 1 is off-policy: use grpo_clip)
    loss: PGLossConfig = dataclasses.field(default_factory=PGLossConfig)
    preset: str = dataclasses.field(default="", metadata={"help": f"start `loss` from one of {tuple(LOSS_PRESETS)}"})
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 16
    adv_eps: float = 1e-6
    max_staleness: int = 0  # rollouts of step t come from the policy of step t - max_staleness
    async_rollouts: bool = False  # generate the next rollout in a background thread (needs max_staleness >= 1)
    lora: LoRAConfig | None = None  # train LoRA adapters only (--grpo.lora.rank 8 --grpo.lora.targets q,v)
    # "batch": lm.align.rollout.rollout (prefill each prompt once, copy its cache into its G rows, decode the
    # batch in lockstep); "engine": the continuous-batching engine, whose G samples share the prompt's pages
    # and leave the batch as they finish (other samples than "batch" draws under the same seed).
    rollout_backend: str = "batch"

    def __post_init__(self):
        check_positive(self, "prompts_per_step", "group_size", "epochs", "max_new_tokens")
        check_positive(self, "max_staleness", zero=True)
        check_choice(self, "rollout_backend", ("batch", "engine"))
        if self.group_size < 2:
            raise ValueError("GRPOConfig.group_size must be >= 2: the group mean is the baseline")
        if self.rollout_size % self.train.batch_size:
            raise ValueError(f"GRPOConfig.train.batch_size={self.train.batch_size} must divide the rollout batch "
                             f"prompts_per_step * group_size = {self.rollout_size}")
        if not isinstance(self.loss, PGLossConfig):
            raise ValueError(f"GRPOConfig.loss must be a PGLossConfig, got {type(self.loss).__name__}")
        if self.preset:
            check_choice(self, "preset", tuple(LOSS_PRESETS))
            object.__setattr__(self, "loss", with_preset(self.preset, self.loss))
        if not self.temperature > 0:
            raise ValueError(f"GRPOConfig.temperature must be > 0, got {self.temperature}")
        if self.async_rollouts and self.max_staleness < 1:
            raise ValueError("GRPOConfig.async_rollouts needs max_staleness >= 1: with 0 the next rollout needs "
                             "the parameters the current step is still computing")

    @property
    def grad_accum(self) -> int:
        """Microbatches per optimizer step (the train config's; the GRPO step reads it here)."""
        return self.train.grad_accum

    @property
    def rollout_size(self) -> int:
        return self.prompts_per_step * self.group_size

    @property
    def optimizer_steps(self) -> int:
        return self.train.steps * self.epochs * (self.rollout_size // self.train.batch_size)

    def train_config(self, model: ModelConfig) -> TrainConfig:
        """The optimizer's config: its schedule spans every update of every rollout step."""
        return dataclasses.replace(self.train, model=model, steps=self.optimizer_steps)
