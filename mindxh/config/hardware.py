"""Accelerator catalogue: dense peak FLOP/s per device and dtype, with the source of each figure.

Data, not code that measures: the CPU's peak is measured by `mindxh.utils.flops`. Recipes
validate `metrics.device` against this table, MFU divides by it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PEAK_FLOPS", "Peak", "canonical_device", "lookup_peak", "normalise", "peak_flops"]


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


def normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def canonical_device(device: str) -> str:
    key = normalise(device)
    by_norm = {normalise(name): name for name in PEAK_FLOPS}
    if key in by_norm:
        return by_norm[key]
    for alias in (key, key.removeprefix("nvidia")):
        if alias in _DEVICE_ALIASES:
            return _DEVICE_ALIASES[alias]
    raise KeyError(f"unknown device {device!r}; known devices: {sorted(PEAK_FLOPS)} or 'cpu'")


def lookup_peak(device: str, dtype: str) -> Peak:
    """The table entry for ``device``/``dtype`` (names are case/punctuation tolerant)."""
    entries = PEAK_FLOPS[canonical_device(device)]
    dkey = normalise(dtype)
    dkey = _DTYPE_ALIASES.get(dkey, dkey)
    if dkey not in entries:
        raise ValueError(
            f"no peak for dtype {dtype!r} on {device!r}; known dtypes: {sorted(entries)}"
        )
    return entries[dkey]


def peak_flops(device: str, dtype: str) -> float:
    """Dense peak FLOP/s; KeyError for unknown device, ValueError for unknown dtype."""
    return lookup_peak(device, dtype).flops
