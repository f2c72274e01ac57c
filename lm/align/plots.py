"""PNG plots of alignment runs: reward, held-out accuracy and KL to the starting model against steps."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grpo_panels(axes, history: list[dict], kl_label: str) -> None:
    """Reward, held-out accuracy and KL curves of `train_grpo`'s history on three axes."""
    train = [h for h in history if "reward" in h]
    evals = [h for h in history if "eval_accuracy" in h]
    n = evals[-1]["eval_n"] if evals else 0
    axes[0].plot([h["step"] for h in train], [h["reward"] for h in train], ".-", ms=3)
    axes[0].set(xlabel="GRPO step", ylabel="mean reward of rollouts", title="rollout reward", ylim=(0, 1.05))
    axes[1].plot([h["step"] for h in evals], [h["eval_accuracy"] for h in evals], "o-", color="C2")
    axes[1].set(xlabel="GRPO step", ylabel="accuracy", title=f"held-out accuracy (greedy, n={n})", ylim=(0, 1.05))
    axes[2].plot([h["step"] for h in train], [h["kl_to_ref"] for h in train], ".-", ms=3, color="C3")
    axes[2].set(xlabel="GRPO step", ylabel="nats / token", title=f"KL(policy || {kl_label}), k3 estimate")
    for ax in axes:
        ax.grid(alpha=0.3)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_grpo(history: list[dict], path: str | Path, title: str = "GRPO") -> Path:
    """Three panels from `train_grpo`'s history: mean rollout reward, held-out accuracy, KL(policy || start)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    _grpo_panels(axes, history, "start")
    fig.suptitle(title)
    path = _save(fig, path)
    plt.close(fig)
    return path


def plot_pipeline(stages: list[dict], grpo_history: list[dict], path: str | Path, n_eval: int) -> Path:
    """Accuracy per stage (bars) beside the GRPO curves. stages: [{"name", "accuracy"}, ...]."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    names, accs = [s["name"] for s in stages], [s["accuracy"] for s in stages]
    bars = axes[0].bar(names, accs, color=["0.6", "C0", "C1", "C2", "C3"][: len(names)])
    for b, a in zip(bars, accs):
        axes[0].text(b.get_x() + b.get_width() / 2, a + 0.01, f"{a:.0%}", ha="center")
    axes[0].set(ylabel="accuracy", title=f"held-out accuracy by stage (n={n_eval})", ylim=(0, 1.05))
    axes[0].tick_params(axis="x", labelsize=8)
    _grpo_panels(axes[1:], grpo_history, "SFT model")
    path = _save(fig, path)
    plt.close(fig)
    return path
