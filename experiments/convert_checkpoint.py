"""Convert a run saved before the layers were stacked into the layout training now reads.

    python -m experiments.convert_checkpoint runs/OLD runs/OLD-stacked

Runs written before the stacked layout hold one parameter subtree per layer
(`params["block_0"]`, `params["block_1"]`, ...), and so do the optimizer's
moments; the model now keeps one `params["blocks"]` whose leaves carry a
leading [n_layers] axis. This writes NEW with every checkpoint step of OLD
converted (parameters, optimizer state, data position, config) and the run's
other files (tokenizer, metrics, plots) copied; OLD is only read. It then
prints the command that resumes training from NEW.

Loading needs no conversion (`lm.inference.load_run`, and so
experiments.generate and experiments.eval, convert an old run as they read
it); resuming training does. From a notebook:

    from lm.train.convert import convert_run
    steps = convert_run("runs/OLD", "runs/OLD-stacked")
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from lm.cli_env import prepare_process

# Flags a resumed run must not inherit: where it is written, and one process's place in a
# multi-process launch.
_NOT_INHERITED = {"out", "name", "resume", "coordinator_address", "num_processes", "process_id"}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _flag_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "none" if v is None else str(v)


def resume_command(run_dir: str | os.PathLike, saved: dict) -> str | None:
    """The `experiments.pretrain` command that resumes `run_dir` from its saved config dict (as a
    checkpoint's `config` item holds it): every flag that differs from its preset's default, so the
    rebuilt train state matches the checkpoint. None for runs not started by experiments.pretrain."""
    if "pretrain" not in saved:
        return None
    from experiments.pretrain import PretrainConfig
    from lm.config import to_dict
    from lm.model import get_preset

    record = _flat({**saved["pretrain"], "model": saved["train"]["model"], "optim": saved["train"]["optim"]})
    preset = record.get("preset", PretrainConfig.preset)
    default = _flat(to_dict(PretrainConfig(model=get_preset(preset), preset=preset)))
    run_dir = Path(run_dir)
    args = ["--out", str(run_dir.parent), "--name", run_dir.name, "--resume", "true"]
    for key, value in record.items():
        # A key today's PretrainConfig lacks has no flag to pass; the restore would say if it mattered.
        if key in _NOT_INHERITED or key not in default or default[key] == value:
            continue
        args += [f"--{key}", _flag_value(value)]
    return "python -m experiments.pretrain " + " ".join(shlex.quote(a) for a in args)


def convert_checkpoint(old: str | os.PathLike, new: str | os.PathLike) -> dict:
    """Convert run `old` into `new`, printing progress; returns {"steps", "generate", "resume", "last_step",
    "steps_configured"} where "generate" and "resume" are the commands to run next ("resume" None when
    the run was not started by experiments.pretrain)."""
    import orbax.checkpoint as ocp

    from lm.train.checkpoint import checkpoint_manager
    from lm.train.convert import convert_run, step_layouts

    old, new = Path(old), Path(new)
    layouts = step_layouts(old)
    legacy = [s for s, layout in layouts.items() if layout == "legacy"]
    if not legacy:
        raise ValueError(
            f"{str(old)!r} is already in the stacked layout (checkpoint steps {list(layouts)}): nothing to convert "
            "and nothing was written. Use it as it is: "
            f"`python -m experiments.generate --run {shlex.quote(str(old))}`, or resume training from it directly")
    print(f"{old}: {len(layouts)} checkpoint(s), steps {list(layouts)}; {len(legacy)} in the per-layer layout")
    steps = convert_run(old, new)
    manager = checkpoint_manager(new / "checkpoints", async_save=False)
    saved = manager.restore(steps[-1], args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    manager.close()
    return {"steps": steps, "last_step": steps[-1], "steps_configured": saved["train"]["steps"],
            "generate": f"python -m experiments.generate --run {shlex.quote(str(new))}",
            "resume": resume_command(new, saved)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", metavar="OLD", help="run directory saved in the per-layer layout (runs/NAME)")
    parser.add_argument("new", metavar="NEW", help="where to write the converted run: a new or empty directory")
    args = parser.parse_args(argv)
    try:
        result = convert_checkpoint(args.old, args.new)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.new}: {len(result['steps'])} checkpoint(s) in the stacked layout, the run's other files copied")
    if (Path(args.new) / "tokenizer.json").is_file():
        print(f"sample from it:  {result['generate']}")
    else:  # runs trained on --tokens without a tokenizer.json
        print(f"load it with:    lm.inference.load_run({args.new!r}, tokenizer=False)  (it has no tokenizer.json)")
    if result["resume"] is None:
        print(f"resume training: lm.trainer.train(config, data, {args.new!r}, resume=True) with the run's config")
    else:
        more = ("" if result["last_step"] < result["steps_configured"] else
                f"  (set --steps above {result['steps_configured']} to train further)")
        print(f"resume training: {result['resume']}{more}")
    return 0


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
