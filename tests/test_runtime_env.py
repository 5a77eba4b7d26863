"""What must be in the environment before MindSpore loads: graph-kernel fusion on CPU wants
one OpenMP thread (its fused kernels' OpenMP threads otherwise contend with MindSpore's pool),
and libgomp reads OMP_NUM_THREADS only once, when `import mindspore` loads it."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import TINY, run_cli

from mindxh.config import CompileConfig, Recipe
from mindxh.train import runtime


def _recipe(**compile_kw) -> Recipe:
    return Recipe(name="env", compile=CompileConfig(**compile_kw))


@pytest.mark.parametrize("kw, expected", [
    ({"mode": "graph", "enable_graph_kernel": True}, "1"),
    ({"mode": "graph", "enable_graph_kernel": False}, None),
    ({"mode": "pynative", "enable_graph_kernel": True}, None),  # no fusion in PyNative
])
def test_prepare_process_sets_one_openmp_thread_only_for_cpu_fusion(monkeypatch, kw, expected):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delitem(sys.modules, "mindspore", raising=False)  # as before the import
    runtime.prepare_process(_recipe(**kw))
    assert runtime.os.environ.get("OMP_NUM_THREADS") == expected


def test_prepare_process_keeps_the_users_setting(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delitem(sys.modules, "mindspore", raising=False)
    runtime.prepare_process(_recipe(mode="graph", enable_graph_kernel=True))
    assert runtime.os.environ["OMP_NUM_THREADS"] == "2"


def test_the_setting_reaches_openmp_when_made_before_the_import():
    """In a fresh process: prepare_process, then `import mindspore`; libgomp (which MindSpore
    loads) then runs one thread. The test fails if the setting came too late to count."""
    code = textwrap.dedent("""
        import ctypes, os
        os.environ.pop("OMP_NUM_THREADS", None)
        from mindxh.config import CompileConfig, Recipe
        from mindxh.train import runtime
        runtime.prepare_process(Recipe(name="env", compile=CompileConfig(mode="graph",
                                                                           enable_graph_kernel=True)))
        import mindspore
        gomp = [l.split()[-1] for l in open("/proc/self/maps") if "libgomp" in l]
        print(ctypes.CDLL(gomp[0]).omp_get_max_threads() if gomp else "no-libgomp")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"


@pytest.mark.slow
def test_a_fused_cpu_run_is_bitwise_reproducible_and_quiet(tmp_path, tiny_tokenizer):
    """`compile.enable_graph_kernel: true` on CPU, end to end through `mindxh train`: AKG
    compiles the fused kernels, the command gives them one OpenMP thread (no warning), AKG's
    per-kernel tiling notice is not printed, and the same seed gives the same weights twice."""
    from safetensors.numpy import load_file

    def train(name):
        res = run_cli("train", str(TINY), "--output-dir", str(tmp_path / name), "--no-progress",
                      "--max-steps", "6", "--set", "train.checkpoint_every=6",
                      "--set", "train.log_every=3", "--set", f"tokenizer.path={tiny_tokenizer}",
                      "--set", "data.heldout_batches=1", "--set", "compile.enable_graph_kernel=true",
                      env={"OMP_NUM_THREADS": ""})
        assert res.returncode == 0, res.stderr[-3000:]
        out = res.stdout + res.stderr
        assert "runs fastest with OMP_NUM_THREADS=1" not in out
        assert "Please set tiling repo path" not in out
        return load_file(str(tmp_path / name / "checkpoints/step-00000006/model.safetensors"))

    a, b = train("a"), train("b")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
