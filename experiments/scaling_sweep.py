"""An IsoFLOP sweep with our trainer: `python -m experiments.scaling_sweep [--budgets ...]`.

The same as `python -m experiments.scaling sweep`; the sweep itself lives in
experiments/scaling.py beside the fits it feeds, and is importable from either
module (`from experiments.scaling_sweep import sweep, SweepConfig`).
"""

import sys

from experiments.scaling import SweepConfig, main as _scaling_main, sweep
from lm.cli_env import prepare_process

__all__ = ["SweepConfig", "main", "sweep"]


def main(argv=None) -> int:
    return _scaling_main(["sweep", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    prepare_process()
    sys.exit(main())
