"""The practical float32 peak of this CPU, measured by a GEMM probe and cached, for MFU.

Accelerator peaks are a table (`mindxh.config.hardware`); a CPU's depends on the machine, so
it is measured once per machine fingerprint and cached under `$MINDXH_CACHE_DIR`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

from mindxh.config.hardware import lookup_peak, normalise
from mindxh.utils.fsio import atomic_write_json

logger = logging.getLogger(__name__)

CACHE_ENV = "MINDXH_CACHE_DIR"
CPU_PEAK_FILENAME = "cpu_peak.json"


def default_cpu_peak_cache() -> Path:
    """``$MINDXH_CACHE_DIR/cpu_peak.json``, else ``~/.cache/mindxh/cpu_peak.json``."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base) if base else Path.home() / ".cache" / "mindxh"
    return root / CPU_PEAK_FILENAME


# The GEMM libraries the probe tries; the fastest one's rate is the peak. numpy alone is not
# enough: its OpenBLAS (a Haswell kernel here) reached 40-50 GFLOP/s on this project's
# AVX-512 machine where MindSpore's own MatMul reached ~220 and torch's ~260
# (docs/performance.md), which put every MFU several times too high.
PROBE_BACKENDS = ("numpy", "mindspore")


def _fingerprint(size: int, backends: tuple[str, ...] = PROBE_BACKENDS) -> str:
    """Cache key: a different machine, core count, numpy, backend set or size re-measures."""
    cpu = platform.processor() or platform.machine()
    return (f"{cpu}|{platform.machine()}|cpus={os.cpu_count()}|numpy={np.__version__}|"
            f"probe={'+'.join(backends)}|n={size}")


def _best_time(run, repeats: int) -> float:
    """Fastest of ``repeats`` calls after one warm-up (thread pools, page faults)."""
    run()
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-9)


def _gemm_call(backend: str, a: np.ndarray, b: np.ndarray):
    """A zero-argument call computing a @ b to completion in ``backend``."""
    if backend == "numpy":
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
        return lambda: np.matmul(a, b, out=out)
    if backend == "mindspore":  # compiled: the eager op reached ~half the rate (110-140 vs 220)
        import mindspore as ms

        ta, tb = ms.Tensor(a), ms.Tensor(b)
        gemm = ms.jit(ms.ops.matmul)
        return lambda: gemm(ta, tb).asnumpy()
    if backend == "torch":
        import torch

        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: torch.mm(ta, tb)
    raise ValueError(f"unknown GEMM probe backend {backend!r}")


def probe_gemm(size: int, repeats: int, backends: tuple[str, ...] = PROBE_BACKENDS
               ) -> dict[str, float]:
    """float32 GEMM FLOP/s of each backend (best of ``repeats``); a backend that cannot run
    here (not installed, no CPU device) is left out."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    rates = {}
    for backend in backends:
        try:
            call = _gemm_call(backend, a, b)
        except (ImportError, RuntimeError) as exc:
            logger.info("GEMM probe: %s skipped (%s)", backend, exc)
            continue
        rates[backend] = 2.0 * size**3 / _best_time(call, repeats)
    return rates


def _run_probe(size: int, repeats: int) -> float:
    """The fastest backend's float32 GEMM FLOP/s: the practical peak of this CPU."""
    rates = probe_gemm(size, repeats)
    logger.info("GEMM probe (n=%d): %s", size,
                ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items()))
    return max(rates.values())


def _read_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable CPU peak cache %s: %s", path, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        logger.warning("ignoring malformed CPU peak cache %s", path)
        return {}
    return entries


def _write_cache(path: Path, entries: dict[str, dict]) -> None:
    """Atomically, so readers never see a partial file; a failure only costs the cache."""
    try:
        atomic_write_json(path, {"entries": entries})
    except OSError as exc:
        logger.warning("could not write CPU peak cache %s: %s", path, exc)


def _cached_flops(entries: dict[str, dict], key: str) -> float | None:
    """The cached peak under ``key``, None if absent or not a positive number."""
    entry = entries.get(key)
    flops = entry.get("flops") if isinstance(entry, dict) else None
    return float(flops) if isinstance(flops, (int, float)) and flops > 0 else None


def _store(path: Path, entries: dict[str, dict], key: str, flops: float, size: int,
           repeats: int) -> None:
    entries[key] = {"flops": flops, "size": size, "repeats": repeats, "measured_at": time.time()}
    _write_cache(path, entries)


def measure_cpu_peak(cache_path: Path | None = None, size: int = 1024, repeats: int = 5) -> float:
    """Measured float32 GEMM FLOP/s of this CPU, cached per machine fingerprint.

    The CPU has no datasheet peak we can rely on, so MFU on CPU is relative to what the
    fastest GEMM here (numpy's BLAS or MindSpore's MatMul) actually reaches. A corrupt cache
    is re-measured.
    """
    path = Path(cache_path) if cache_path is not None else default_cpu_peak_cache()
    key = _fingerprint(size)
    entries = _read_cache(path)
    cached = _cached_flops(entries, key)
    if cached is not None:
        return cached
    flops = _run_probe(size, repeats)
    logger.info("measured CPU float32 GEMM peak: %.3g FLOP/s (n=%d)", flops, size)
    _store(path, entries, key, flops, size, repeats)
    return flops


def revise_cpu_peak(achieved: float, cache_path: Path | None = None, size: int = 1024,
                    repeats: int = 5) -> float:
    """The peak after a run reached ``achieved`` FLOP/s, above the cached probe.

    A probe measured while other work shared the cores reads low, and every later run would
    report MFU over 100% against it. Probe again now and keep the higher of the two in the
    cache; the caller warns if the run still beats it (the GEMM probe is then not this
    machine's practical peak).
    """
    path = Path(cache_path) if cache_path is not None else default_cpu_peak_cache()
    key = _fingerprint(size)
    entries = _read_cache(path)
    old = _cached_flops(entries, key)
    flops = max(_run_probe(size, repeats), old or 0.0)
    logger.warning("a run reached %.3g FLOP/s, above the cached CPU GEMM peak %s: re-probed, "
                   "peak now %.3g FLOP/s (%s)", achieved, f"{old:.3g}" if old else "(none)",
                   flops, path)
    _store(path, entries, key, flops, size, repeats)
    return flops


def is_probed(device: str) -> bool:
    """Whether MFU on ``device`` is measured against the GEMM probe (CPU), not a table."""
    return normalise(device) == "cpu"


def resolve_peak(device: str, dtype: str) -> tuple[float, str]:
    """(peak FLOP/s, source) for MFU: probe for ``cpu``, the table otherwise."""
    if is_probed(device):
        path = default_cpu_peak_cache()
        return measure_cpu_peak(path), f"measured float32 GEMM probe, cached at {path}"
    peak = lookup_peak(device, dtype)
    return peak.flops, peak.source
