"""The GPU benchmarks refuse politely on a machine without a GPU (exit status 0, a message)."""

import jax
import pytest

from benchmarks import attention, norm


@pytest.mark.parametrize("main", [attention.main, norm.main], ids=["attention", "norm"])
def test_benchmark_says_gpu_needed_on_cpu(main, capsys):
    if jax.default_backend() == "gpu":
        pytest.skip("this machine has a GPU: the benchmark would really run")
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 0 and "needs a CUDA GPU" in capsys.readouterr().out
