"""Run a scenario of tests/parallel/worker.py in a fresh process with N virtual CPU devices.

XLA reads the device count when JAX starts its backend, so it cannot change
inside the pytest process (which the rest of the suite shares); each scenario
runs in a subprocess instead and reports back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cpu_devices_env(n: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_scenario(name: str, tmp_path: Path, n_devices: int = 8, timeout: int = 600) -> dict:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, "-m", "tests.parallel.worker", name, str(out)], cwd=REPO,
                          env=cpu_devices_env(n_devices), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not out.is_file():
        raise AssertionError(f"worker scenario {name!r} failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return json.loads(out.read_text())
