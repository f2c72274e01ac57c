"""Every strategy on 8 virtual CPU devices trains exactly like one device.

The runs happen in a subprocess (tests/parallel/worker.py) because the device
count is fixed when JAX starts. Each strategy starts from the same state and
sees the same batches as a single-device run; the losses and gradient norms of
every step and the final parameters must agree to float32 round-off. The
gradient norm matters: Adam's update hardly changes when every gradient is
scaled, so a sum-instead-of-mean bug would pass a parameter check alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.parallel.devices import run_scenario
from tests.parallel.worker import QUICK, STRATEGIES

pytestmark = pytest.mark.multidevice

PARAM_ATOL = 2e-4  # float32 noise after 3 AdamW steps is <= 4e-5 here; one wrong step moves params ~lr = 1e-2


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_scenario("quick", tmp_path_factory.mktemp("quick"))


def _assert_matches_single_device(report: dict, name: str) -> None:
    ref, got = report["reference"]["history"], report[name]["history"]
    assert len(got) == len(ref) == 3
    for key in ("loss", "grad_norm", "param_norm", "nll"):
        np.testing.assert_allclose([h[key] for h in got], [h[key] for h in ref], rtol=1e-5, err_msg=f"{name}: {key}")
    assert [h["num_tokens"] for h in got] == [h["num_tokens"] for h in ref]
    assert report[name]["max_param_diff"] < PARAM_ATOL, report[name]["max_param_diff"]


@pytest.mark.parametrize("name", QUICK)
def test_matches_single_device(quick, name):
    _assert_matches_single_device(quick["strategies"], name)


@pytest.mark.parametrize("name", ["ddp", "zero1"])
def test_explicit_collectives_match_the_compiler(quick, name):
    report = quick["strategies"][name]
    assert "shard_map" in report["description"]
    assert report["max_param_diff_vs_dp"] < PARAM_ATOL
    np.testing.assert_allclose([h["loss"] for h in report["history"]],
                               [h["loss"] for h in quick["strategies"]["dp"]["history"]], rtol=1e-6)


def test_params_carry_the_shardings_the_table_says(quick):
    s = quick["strategies"]
    fsdp_tp = s["fsdp_tp"]["specs"]["params"]
    # Megatron: column-parallel q/k/v, w1/w3 and head, row-parallel wo and w2; FSDP on d_model.
    # The stacked layers' leading "layers" axis stays whole (it is split only by `pipe`).
    expected = {
        "['blocks']['attn']['wq']": "P(None, 'fsdp', 'tensor')",
        "['blocks']['attn']['wk']": "P(None, 'fsdp', 'tensor')",
        "['blocks']['attn']['wo']": "P(None, 'tensor', None, 'fsdp')",
        "['blocks']['mlp']['w1']['kernel']": "P(None, 'fsdp', 'tensor')",
        "['blocks']['mlp']['w2']['kernel']": "P(None, 'tensor', 'fsdp')",
        "['embed']['embedding']": "P('tensor', 'fsdp')", "['head']['kernel']": "P('fsdp', 'tensor')",
        "['final_norm']['scale']": "P('fsdp',)",
    }
    assert {k: fsdp_tp[k] for k in expected} == expected
    # Adam's moments follow their parameters; the step count is replicated.
    opt = s["fsdp_tp"]["specs"]["opt_state"]
    for path, spec in fsdp_tp.items():
        assert opt[f"[1].mu{path}"] == opt[f"[1].nu{path}"] == spec
    assert opt["[1].count"] == "P()"
    # Data parallelism replicates everything; tensor parallelism alone leaves d_model whole.
    assert set(s["dp"]["specs"]["params"].values()) == {"P()"}
    assert s["dp_tp"]["specs"]["params"]["['blocks']['attn']['wq']"] == "P(None, None, 'tensor')"
    # Pipeline: stacked blocks split by layer over `pipe`, the rest replicated.
    pp = s["dp_pp"]["specs"]["params"]
    assert {v for k, v in pp.items() if k.startswith("['blocks']")} == {"P('pipe',)"}
    assert {v for k, v in pp.items() if not k.startswith("['blocks']")} == {"P()"}
    # ZeRO-1: params whole on every device, Adam's moments split over `data`.
    z = s["zero1"]["specs"]
    assert set(z["params"].values()) == {"P()"}
    assert z["opt_state"]["[1].mu['head']['kernel']"] == "P('data',)"
    assert z["opt_state"]["[1].mu['blocks']['attn']['wo']"] == "P(None, None, 'data')"  # 2 layers, 4 heads: head_dim


def test_fsdp_holds_an_eighth_per_device(quick):
    m = quick["memory"]
    whole = m["bytes_total"]
    assert m["dp"]["devices"] == m["fsdp"]["devices"] == 8
    assert m["dp"]["max_bytes"] == whole  # replicated: every device holds all of it
    # Everything but the replicated step count splits 8 ways.
    assert whole / 8 <= m["fsdp"]["min_bytes"] <= m["fsdp"]["max_bytes"] <= whole / 8 + 64
    # ZeRO-1: whole params (a third: params, mu, nu) plus an eighth of the two moments.
    assert m["zero1"]["max_bytes"] == pytest.approx(whole * (1 + 2 / 8) / 3, rel=0.01)


def test_configs_that_cannot_shard_say_why(quick):
    e = quick["errors"]
    expected = {
        "mesh_not_dividing": "does not divide the 8 devices",
        "two_rest_axes": "at most one mesh axis may be -1",
        "heads_vs_tensor": "n_heads=2 is not divisible by the tensor axis (4)",
        "kv_heads_vs_tensor": "n_kv_heads=2 is not divisible by the tensor axis (4)",
        "batch_vs_data": "batch_size=12",
        "layers_vs_pipe": "n_layers=2 does not split into 4 pipeline stages",
        "microbatches": "microbatches=3",
        "pipe_with_tensor": "combines with the data axis only",
        "zero1_muon": "AdamW only",
    }
    for case, fragment in expected.items():
        assert e[case] is not None and fragment in e[case], (case, e[case])


def test_gpu_presets_lower_on_their_meshes(quick):
    """gpt2-small on FSDP 8, d12 on DP x FSDP x TP, 350m on DP x pipeline, 1b on FSDP x TP: shapes only."""
    for name, r in quick["presets"].items():
        assert r["error"] is None, (name, r["error"])
    assert quick["presets"]["350m"]["description"].startswith("dp4 x pp2")


@pytest.mark.slow
def test_every_strategy_and_the_sharded_init(tmp_path):
    report = run_scenario("full", tmp_path)
    for name in STRATEGIES:
        _assert_matches_single_device(report["strategies"], name)
    for name, r in report["init"].items():  # same random bits; the sharded program rounds erf_inv
        assert r["as_planned"] and r["max_diff"] < 1e-5, (name, r)  # differently (measured 5e-6 on values ~3)
    muon = report["pipeline_muon"]  # stacked layers: each pipeline stage orthogonalises its own matrices
    np.testing.assert_allclose([h["loss"] for h in muon["history"]], [h["loss"] for h in muon["reference"]], rtol=1e-5)
    assert muon["max_param_diff"] < PARAM_ATOL, muon["max_param_diff"]
