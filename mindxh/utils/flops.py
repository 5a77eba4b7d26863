"""Model FLOPs per token, peak FLOP/s per device, and MFU (pure numpy + stdlib).

The convention is chosen so MFU is comparable with PaLM, nanoGPT/nanochat and
torchtitan numbers; see :func:`flops_per_token`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CACHE_ENV = "MINDXH_CACHE_DIR"
CPU_PEAK_FILENAME = "cpu_peak.json"


def flops_per_token(
    n_params_non_embedding: int, n_layers: int, n_heads: int, head_dim: int, seq_len: int
) -> float:
    """Training FLOPs per token: ``6*N + 12*L*H*Q*T``.

    Convention (PaLM, Chowdhery et al. 2022, appendix B "Calculation of model
    FLOPs utilization"; also nanoGPT/nanochat), which keeps MFU comparable with
    PaLM/nanochat/torchtitan numbers:

    * Training = forward + backward = 3x forward; a matmul with P weights costs
      2*P FLOPs per token forward, hence ``6*N``.
    * ``N`` counts every weight used in a matmul. Exclude only the input
      embedding table (a lookup, not a matmul). Include the output projection
      (lm_head, vocab x d_model) in ``N`` whether or not it is tied to the input
      embedding, because it is a matmul either way. Norm gains and biases may
      be included; they are negligible.
    * ``12*L*H*Q*T`` is attention: QK^T and AV, each 2*T*Q FLOPs per token per
      head forward, times 3 for training. It counts the full T x T square;
      causal masking is NOT halved. ``H`` is the number of query heads, ``Q``
      the head dim, ``T`` the training sequence length.
    """
    for name, value in (
        ("n_params_non_embedding", n_params_non_embedding),
        ("n_layers", n_layers),
        ("n_heads", n_heads),
        ("head_dim", head_dim),
        ("seq_len", seq_len),
    ):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    return float(6 * n_params_non_embedding + 12 * n_layers * n_heads * head_dim * seq_len)


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over peak FLOP/s (0..1)."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops}")
    return tokens_per_s * flops_per_token / peak_flops


@dataclass(frozen=True)
class Peak:
    """Dense (no sparsity) peak FLOP/s of one device for one dtype."""

    device: str
    dtype: str
    flops: float
    source: str


def _peaks(device: str, source: str, **by_dtype: float) -> dict[str, Peak]:
    return {dtype: Peak(device, dtype, flops, source) for dtype, flops in by_dtype.items()}


_CANN = "CANN chip config {}"
_VERL = "; also used by MindSpeed-LLM and verl flops counters"

# Per device, dense, no sparsity. Keys are canonical device names.
PEAK_FLOPS: dict[str, dict[str, Peak]] = {
    "ascend-910b2": _peaks(
        "ascend-910b2", _CANN.format("Ascend910B2.ini") + _VERL,
        bf16=354e12, fp16=376e12, fp32=99.5e12,
    ),
    "ascend-910b3": _peaks(
        "ascend-910b3", _CANN.format("Ascend910B3.ini"),
        bf16=295e12, fp16=313e12, fp32=83e12,
    ),
    "ascend-910b4": _peaks(
        "ascend-910b4", _CANN.format("Ascend910B4.ini"),
        bf16=246e12, fp16=280e12, fp32=75e12,
    ),
    "ascend-910c-die": _peaks(
        "ascend-910c-die",
        _CANN.format("Ascend910_93xx.ini") + "; one die, a 910C package is 2 dies (~2x)",
        bf16=354e12, fp16=376e12, fp32=99.5e12,
    ),
    "nvidia-h100-sxm": _peaks(
        "nvidia-h100-sxm", "NVIDIA H100 SXM datasheet (dense)",
        bf16=989e12, fp16=989e12, fp32=67e12, tf32=495e12,
    ),
    "nvidia-h20": _peaks(
        "nvidia-h20", "MindSpeed-LLM / verl flops counter tables",
        bf16=148e12, fp16=148e12, fp32=44e12,
    ),
    "nvidia-a100-sxm": _peaks(
        "nvidia-a100-sxm", "NVIDIA A100 SXM datasheet (dense)",
        bf16=312e12, fp16=312e12, fp32=19.5e12, tf32=156e12,
    ),
}

# Normalised alias -> canonical key. "Ascend 910B" means the 910B2 SKU.
_DEVICE_ALIASES = {
    "ascend910b": "ascend-910b2",
    "910b": "ascend-910b2",
    "910b2": "ascend-910b2",
    "910b3": "ascend-910b3",
    "910b4": "ascend-910b4",
    "ascend910c": "ascend-910c-die",
    "910c": "ascend-910c-die",
    "h100": "nvidia-h100-sxm",
    "h100sxm": "nvidia-h100-sxm",
    "h20": "nvidia-h20",
    "a100": "nvidia-a100-sxm",
    "a100sxm": "nvidia-a100-sxm",
}

_DTYPE_ALIASES = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "float32": "fp32",
    "float": "fp32",
    "tensorfloat32": "tf32",
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _canonical_device(device: str) -> str:
    key = _norm(device)
    by_norm = {_norm(name): name for name in PEAK_FLOPS}
    if key in by_norm:
        return by_norm[key]
    for alias in (key, key.removeprefix("nvidia")):
        if alias in _DEVICE_ALIASES:
            return _DEVICE_ALIASES[alias]
    raise KeyError(f"unknown device {device!r}; known devices: {sorted(PEAK_FLOPS)} or 'cpu'")


def lookup_peak(device: str, dtype: str) -> Peak:
    """The table entry for ``device``/``dtype`` (names are case/punctuation tolerant)."""
    entries = PEAK_FLOPS[_canonical_device(device)]
    dkey = _norm(dtype)
    dkey = _DTYPE_ALIASES.get(dkey, dkey)
    if dkey not in entries:
        raise ValueError(
            f"no peak for dtype {dtype!r} on {device!r}; known dtypes: {sorted(entries)}"
        )
    return entries[dkey]


def peak_flops(device: str, dtype: str) -> float:
    """Dense peak FLOP/s; KeyError for unknown device, ValueError for unknown dtype."""
    return lookup_peak(device, dtype).flops


def default_cpu_peak_cache() -> Path:
    """``$MINDXH_CACHE_DIR/cpu_peak.json``, else ``~/.cache/mindxh/cpu_peak.json``."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base) if base else Path.home() / ".cache" / "mindxh"
    return root / CPU_PEAK_FILENAME


def _fingerprint(size: int) -> str:
    """Cache key: a different machine, core count, numpy or size re-measures."""
    cpu = platform.processor() or platform.machine()
    return f"{cpu}|{platform.machine()}|cpus={os.cpu_count()}|numpy={np.__version__}|n={size}"


def _run_probe(size: int, repeats: int) -> float:
    """Best-of-``repeats`` float32 GEMM FLOP/s, after one warm-up."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm-up: thread pool, page faults
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / max(best, 1e-9)


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
    """Write via temp file + rename so readers never see a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"entries": entries}, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        logger.warning("could not write CPU peak cache %s: %s", path, exc)


def measure_cpu_peak(cache_path: Path | None = None, size: int = 1024, repeats: int = 5) -> float:
    """Measured float32 GEMM FLOP/s of this CPU, cached per machine fingerprint.

    The CPU has no datasheet peak we can rely on, so MFU on CPU is relative to
    what numpy's BLAS actually reaches. A corrupt cache is re-measured.
    """
    path = Path(cache_path) if cache_path is not None else default_cpu_peak_cache()
    key = _fingerprint(size)
    entries = _read_cache(path)
    entry = entries.get(key)
    if isinstance(entry, dict):
        flops = entry.get("flops")
        if isinstance(flops, (int, float)) and flops > 0:
            return float(flops)
    flops = _run_probe(size, repeats)
    logger.info("measured CPU float32 GEMM peak: %.3g FLOP/s (n=%d)", flops, size)
    entries[key] = {"flops": flops, "size": size, "repeats": repeats, "measured_at": time.time()}
    _write_cache(path, entries)
    return flops


def resolve_peak(device: str, dtype: str) -> tuple[float, str]:
    """(peak FLOP/s, source) for MFU: probe for ``cpu``, the table otherwise."""
    if _norm(device) == "cpu":
        path = default_cpu_peak_cache()
        return measure_cpu_peak(path), f"measured float32 GEMM probe, cached at {path}"
    peak = lookup_peak(device, dtype)
    return peak.flops, peak.source
