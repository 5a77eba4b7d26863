"""FLOP accounting (mindxh.models.accounting), the peak table (mindxh.config.hardware) and
the cached CPU probe (mindxh.utils.flops)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mindxh.config.hardware import PEAK_FLOPS, Peak, peak_flops
from mindxh.models.accounting import flops_per_token, mfu
from mindxh.utils import flops
from mindxh.utils.flops import measure_cpu_peak, resolve_peak


def test_flops_per_token_gpt2_small() -> None:
    # GPT-2 small: L=12, d=768, H=12, Q=64, T=1024, vocab=50257, tied lm_head.
    # Per block: qkv 768*2304+2304 = 1_771_776; proj 768*768+768 = 590_592;
    # fc 768*3072+3072 = 2_362_368; fc_proj 3072*768+768 = 2_360_064;
    # 2 layernorms 4*768 = 3_072  -> 7_087_872 per block, 85_054_464 for 12.
    # + final layernorm 1_536 + lm_head 768*50257 = 38_597_376 -> N = 123_653_376.
    # 6N = 741_920_256; attention 12*12*12*64*1024 = 113_246_208.
    expected = 741_920_256 + 113_246_208
    assert expected == 855_166_464
    assert flops_per_token(123_653_376, 12, 12, 64, 1024) == expected


def test_flops_per_token_terms_and_validation() -> None:
    assert flops_per_token(1_000, 0, 0, 0, 0) == 6_000.0
    assert flops_per_token(0, 2, 4, 8, 16) == 12 * 2 * 4 * 8 * 16
    with pytest.raises(ValueError):
        flops_per_token(-1, 1, 1, 1, 1)


def test_mfu_arithmetic() -> None:
    # 1e4 tok/s * 6e9 FLOP/tok = 6e13 FLOP/s on a 354e12 peak.
    assert mfu(1e4, 6e9, 354e12) == pytest.approx(6e13 / 354e12)
    assert mfu(0.0, 6e9, 1e12) == 0.0
    with pytest.raises(ValueError):
        mfu(1.0, 1.0, 0.0)


@pytest.mark.parametrize(
    ("device", "dtype", "expected"),
    [
        ("ascend-910b2", "bf16", 354e12),
        ("Ascend 910B", "bfloat16", 354e12),
        ("Ascend910B2", "fp16", 376e12),
        ("ascend-910b3", "bf16", 295e12),
        ("910B4", "fp32", 75e12),
        ("ascend-910c-die", "bf16", 354e12),
        ("NVIDIA H100 SXM", "tf32", 495e12),
        ("h100", "bf16", 989e12),
        ("nvidia-h20", "float32", 44e12),
        ("A100", "bf16", 312e12),
        ("nvidia-a100-sxm", "fp32", 19.5e12),
    ],
)
def test_peak_table_lookup(device: str, dtype: str, expected: float) -> None:
    assert peak_flops(device, dtype) == expected


def test_peak_table_entries_are_consistent() -> None:
    for device, by_dtype in PEAK_FLOPS.items():
        for dtype, peak in by_dtype.items():
            assert isinstance(peak, Peak)
            assert (peak.device, peak.dtype) == (device, dtype)
            assert peak.flops > 1e12 and peak.source


def test_unknown_device_and_dtype_errors() -> None:
    with pytest.raises(KeyError, match="ascend-910b2"):
        peak_flops("tpu-v5", "bf16")
    with pytest.raises(ValueError, match="fp32"):
        peak_flops("ascend-910b2", "fp8")


def test_resolve_peak_table() -> None:
    value, source = resolve_peak("ascend-910b2", "bf16")
    assert value == 354e12
    assert "Ascend910B2.ini" in source


def test_cpu_probe_measures_then_reads_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cpu_peak.json"
    value = measure_cpu_peak(cache, size=256, repeats=2)
    assert 1e9 <= value <= 1e13
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 1
    assert next(iter(entries.values()))["flops"] == value

    def boom(size: int, repeats: int) -> float:
        raise AssertionError("probe re-ran despite a valid cache")

    monkeypatch.setattr(flops, "_run_probe", boom)
    assert measure_cpu_peak(cache, size=256, repeats=2) == value


def test_cpu_probe_other_fingerprint_remeasures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cpu_peak.json"
    cache.write_text(json.dumps({"entries": {"other-machine|n=256": {"flops": 1.0}}}))
    monkeypatch.setattr(flops, "_run_probe", lambda size, repeats: 5e10)
    assert measure_cpu_peak(cache, size=256) == 5e10
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 2  # the other machine's entry is kept


@pytest.mark.parametrize("content", ["{truncated", '{"entries": [1, 2]}', "[]", ""])
def test_cpu_probe_recovers_from_corrupt_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    cache = tmp_path / "cpu_peak.json"
    cache.write_text(content)
    monkeypatch.setattr(flops, "_run_probe", lambda size, repeats: 4.2e10)
    assert measure_cpu_peak(cache, size=64) == 4.2e10
    entries = json.loads(cache.read_text())["entries"]
    assert [e["flops"] for e in entries.values()] == [4.2e10]
    assert not list(tmp_path.glob(".cpu_peak.json.*"))  # no temp file left behind


def test_resolve_peak_cpu_uses_env_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINDXH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(flops, "_run_probe", lambda size, repeats: 3e10)
    value, source = resolve_peak("cpu", "fp32")
    assert value == 3e10
    assert source.startswith("measured float32 GEMM probe")
    assert str(tmp_path / "cpu_peak.json") in source
    assert (tmp_path / "cpu_peak.json").is_file()


def test_default_probe_is_fast(tmp_path: Path) -> None:
    import time

    start = time.perf_counter()
    measure_cpu_peak(tmp_path / "c.json")  # default size/repeats
    # ~1 s alone on 2 cores; the bound catches a probe grown by an order of magnitude, not
    # load (a CI run beside other jobs took just over 2 s)
    assert time.perf_counter() - start < 10.0


def test_cpu_peak_revised_when_a_run_beats_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe cached under load reads low; a run above it re-probes and keeps the higher."""
    cache = tmp_path / "cpu_peak.json"
    monkeypatch.setattr(flops, "_run_probe", lambda size, repeats: 2e10)  # measured under load
    assert measure_cpu_peak(cache, size=64) == 2e10
    monkeypatch.setattr(flops, "_run_probe", lambda size, repeats: 4e10)  # quiet now
    assert flops.revise_cpu_peak(3e10, cache, size=64) == 4e10
    assert measure_cpu_peak(cache, size=64) == 4e10  # the cache keeps the revision
    monkeypatch.setattr(flops, "_run_probe", lambda size, repeats: 1e10)  # loaded again
    assert flops.revise_cpu_peak(5e10, cache, size=64) == 4e10  # never lowered


def test_probe_takes_the_fastest_gemm_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's BLAS can be several times slower than MindSpore's MatMul on the same CPU (an
    AVX-512 machine: ~45 vs ~220 GFLOP/s); the peak is the fastest library's rate."""
    rates = flops.probe_gemm(64, 1, ("numpy", "mindspore"))
    assert set(rates) == {"numpy", "mindspore"} and min(rates.values()) > 0
    with pytest.raises(ValueError, match="unknown GEMM probe backend"):
        flops.probe_gemm(8, 1, ("cublas",))
    monkeypatch.setattr(flops, "probe_gemm", lambda size, repeats: {"numpy": 4e10, "mindspore": 2.2e11})
    assert flops._run_probe(64, 1) == 2.2e11


def test_cache_key_names_the_probe_backends() -> None:
    """A peak cached by the numpy-only probe of earlier versions is not reused."""
    assert "probe=numpy+mindspore" in flops._fingerprint(64)
    assert flops._fingerprint(64) != flops._fingerprint(64, ("numpy",))
