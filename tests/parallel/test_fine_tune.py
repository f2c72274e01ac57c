"""SFT and GRPO steps on 8 virtual CPU devices (FSDP 4 x TP 2) train exactly like one device.

The same `lm.parallel.make_plan` that shards pretraining shards any step: here the SFT and the
GRPO-clip steps, through `lm.trainer.fine_tune_plan`, from the same parameters on the same batches
(tests/parallel/worker.py, scenario "fine_tune").
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.parallel.devices import run_scenario

pytestmark = [pytest.mark.multidevice, pytest.mark.slow]  # ~17 s of CPU, ~45 s on a busy 2-core machine


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return run_scenario("fine_tune", tmp_path_factory.mktemp("fine_tune"))["fine_tune"]


@pytest.mark.parametrize("kind", ["sft", "grpo", "sft_lora"])
def test_fsdp_and_tensor_parallel_match_one_device(report, kind):
    """sft_lora: LoRA adapters (replicated) on a frozen base sharded as the full model (its wq_spec)."""
    ref, got = report[kind]["one_device"], report[kind]["fsdp_tp"]
    lora = ", LoRA r=4" if kind == "sft_lora" else ""
    assert got["description"] == "fsdp4 x tp2" + lora and got["wq_spec"] == "P(None, 'fsdp', 'tensor')"
    assert ref["description"] == "single device" + lora
    for key in ("loss", "grad_norm", "param_norm"):
        np.testing.assert_allclose([h[key] for h in got["history"]], [h[key] for h in ref["history"]],
                                   rtol=1e-5, atol=1e-6, err_msg=f"{kind}: {key}")
    assert max(h["grad_norm"] for h in ref["history"]) > 0.01  # the steps really moved the parameters
    assert got["max_param_diff"] < 2e-4, got["max_param_diff"]  # float32 reordering; one wrong step is ~lr
