from lm.cli_env import prepare_process
from lm.xla_flags import CPU_FLAGS, apply_default_flags, default_flags


def test_flags_only_for_checked_versions():
    assert default_flags("0.10.2") == CPU_FLAGS
    assert default_flags("0.11.0") == {}


def test_user_flags_are_kept_and_opt_out_works(monkeypatch):
    monkeypatch.setattr("lm.xla_flags.metadata.version", lambda _: "0.10.2")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = apply_default_flags(env)
    assert out.startswith("--xla_force_host_platform_device_count=8 ")
    assert all(f"--{k}={v}" in out for k, v in CPU_FLAGS.items())
    assert apply_default_flags(env) == out  # idempotent
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"}
    assert apply_default_flags(mine) == "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"
    off = {"LM_XLA_DEFAULTS": "0"}
    assert apply_default_flags(off) == "" and "XLA_FLAGS" not in off


def test_entry_points_prepare_flags_and_quiet_logs(monkeypatch):
    monkeypatch.setattr("lm.xla_flags.metadata.version", lambda _: "0.10.2")
    env = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    prepare_process(env)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's value stays
    assert all(f"--{k}={v}" in env["XLA_FLAGS"] for k, v in CPU_FLAGS.items())
    fresh = {}
    prepare_process(fresh)
    assert fresh["TF_CPP_MIN_LOG_LEVEL"] == "2" and fresh["XLA_FLAGS"] == env["XLA_FLAGS"]
