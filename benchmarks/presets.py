"""Every model preset compiled ahead of time on this machine, and what remat saves.

    python -m benchmarks.presets            # print both tables
    python -m benchmarks.presets --write    # and write them into benchmarks/RESULTS.md

Table 1, per preset (`lm.train.plan_report`, nothing allocated): parameters, training FLOPs per
token from the config (what MFU uses) and as XLA's cost analysis counts the same step (lowered
with the layers unrolled, see lm/train/report.py), their ratio (the target is within 5%), and the
compiled train step's memory per device at the given batch on this backend.

Table 2: XLA's temporary memory of the compiled train step for `--remat-layers` layers at d 256
(the `bench` shape) with remat none, dots and full; the target is at least 3x less with full.
Memory is what this backend's compiler plans; a GPU plans its own (cuDNN attention, for one,
stores no probabilities), so run this (or `--dry-run`) there for GPU figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

from benchmarks.results import machine_description, markdown_table, write_section
from lm.cli_env import prepare_process
from lm.model import PRESETS, get_preset
from lm.train.config import TrainConfig
from lm.trainer.report import plan_report

REPO = Path(__file__).resolve().parents[1]

GIB = 1024**3


def preset_rows(batch_for: dict) -> list[list]:
    rows = []
    for name in PRESETS:
        c = get_preset(name)
        b = batch_for.get(name, 8)
        r = plan_report(TrainConfig(model=c, batch_size=b))
        m = r["memory"]
        rows.append([name, f"{r['params'] / 1e6:,.1f}M", f"{r['flops_per_token'] / 1e6:,.1f}M",
                     f"{r['xla_flops_per_token'] / 1e6:,.1f}M", f"{r['flops_ratio']:.4f}",
                     f"{b} x {c.context_length}", f"{m['argument'] / GIB:.2f}", f"{m['temp'] / GIB:.2f}",
                     f"{r['compile_s']:.1f}"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    return rows


def remat_rows(layers: int, batch: int) -> list[list]:
    rows, base = [], None
    for remat in ("none", "dots", "full"):
        model = get_preset("bench", n_layers=layers, remat=remat, scan_layers=True)
        r = plan_report(TrainConfig(model=model, batch_size=batch), xla_flops=False)
        temp = r["memory"]["temp"]
        base = base or temp
        rows.append([remat, f"{temp / 2**20:,.0f}", f"{base / temp:.2f}x", f"{r['compile_s']:.1f}"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remat-layers", type=int, default=12)
    ap.add_argument("--remat-batch", type=int, default=8)
    ap.add_argument("--write", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    small = {"tiny": 16, "tinystories": 16, "bench": 16}
    presets = markdown_table(["preset", "params", "FLOPs/token (config)", "FLOPs/token (XLA)", "XLA / config",
                              "batch", "arguments GiB/device", "temporaries GiB/device", "compile s"],
                             preset_rows(small))
    remat = markdown_table(["remat", "temporaries MiB", "saving vs none", "compile s"],
                           remat_rows(args.remat_layers, args.remat_batch))
    device = jax.devices()[0].device_kind
    body = (f"## Model presets and remat (`python -m benchmarks.presets`)\n\n"
            f"{machine_description()}; backend {jax.default_backend()} ({device}), jax {jax.__version__}. "
            "Compiled ahead of time from shapes (`lm.train.plan_report`), nothing allocated. FLOPs per "
            "token: the config's 6N + 12 L T d against XLA's cost analysis of the same step with the layers "
            "unrolled, full logits, plain XLA attention and no remat (target: within 5%). Memory is this "
            "backend's plan for the train step (float32 AdamW state; bf16 compute where the preset says).\n\n"
            f"{presets}\n\n"
            f"Remat: train-step temporaries, {args.remat_layers} layers at d 256 (`bench` shape), batch "
            f"{args.remat_batch} x 256 (target: full at least 3x below none; loss and gradients equal, "
            "tests/model/test_core.py).\n\n"
            f"{remat}\n")
    print(body)
    if args.write:
        write_section("presets", body)
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
