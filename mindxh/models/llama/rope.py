"""RoPE inverse frequencies, plain or with Llama 3.1's long-context scaling.

Kept apart from model.py so the formula a converted checkpoint depends on can be read and
tested on its own. The llama3 rule follows Meta's reference code (and Hugging Face's
`_compute_llama3_parameters`): wavelengths longer than `original / low_freq_factor` are
stretched by `factor`, shorter than `original / high_freq_factor` are kept, and a linear ramp
in `original / wavelength` blends the two in between.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from mindxh.config.schema import RopeScalingConfig


def inv_frequencies(head_dim: int, theta: float,
                    scaling: Optional[RopeScalingConfig] = None) -> np.ndarray:
    """[head_dim // 2] float64 inverse frequencies theta^(-2i/d), scaled when asked."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    if scaling is None or scaling.type is None:
        return inv_freq
    if scaling.type == "llama3":
        return _llama3(inv_freq, scaling)
    raise ValueError(f"unknown rope_scaling.type {scaling.type!r}")


def _llama3(inv_freq: np.ndarray, s: RopeScalingConfig) -> np.ndarray:
    old_len = float(s.original_max_position_embeddings)
    low_freq_wavelen = old_len / s.low_freq_factor
    high_freq_wavelen = old_len / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(medium, smoothed, scaled)


__all__ = ["inv_frequencies"]
