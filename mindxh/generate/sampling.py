"""Choosing the next token from logits, on the host with NumPy.

The compiled step returns one row of logits per sequence; sampling there would need a graph
per option set, while NumPy over [batch, vocab] costs well under a millisecond a step.
Randomness comes from one generator per prompt (seeded by the run's seed and the prompt's
index), so a prompt's completion does not depend on which other prompts share its batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mindxh.errors import MindxhError

__all__ = ["SamplingConfig", "SamplingError", "log_probs", "row_rngs", "sample"]


class SamplingError(MindxhError, ValueError):
    """Sampling settings that cannot work (the message names the setting)."""


@dataclass
class SamplingConfig:
    """How to pick tokens. temperature 0 is greedy (argmax); top_k 0 and top_p 1.0 are off."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise SamplingError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature < math.inf:  # NaN fails too (it sampled token 0 forever)
            raise SamplingError(f"temperature must be a finite number >= 0 (0 is greedy), got "
                                f"{self.temperature}")
        if self.top_k < 0:
            raise SamplingError(f"top_k must be >= 0 (0 is off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise SamplingError(f"top_p must be in (0, 1] (1.0 is off), got {self.top_p}")
        if self.seed < 0:
            raise SamplingError(f"seed must be >= 0, got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def row_rngs(seed: int, indices) -> list[np.random.Generator]:
    """One generator per prompt: the same (seed, prompt index) always draws the same numbers."""
    return [np.random.default_rng([seed, int(i)]) for i in indices]


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def sample(logits: np.ndarray, cfg: SamplingConfig, uniforms: np.ndarray | None = None) -> np.ndarray:
    """Token ids [N] from logits [N, V]; `uniforms` [N] in [0, 1) drive the draw (inverse CDF).

    top_k keeps the k most likely tokens, top_p the smallest prefix of the sorted distribution
    whose mass reaches p (the most likely token is always kept). Ties keep the lower id, as
    argmax does, so top_k=1 and a tiny top_p are exactly greedy.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, V], got shape {logits.shape}")
    if cfg.greedy:
        return logits.argmax(-1)
    if uniforms is None or len(uniforms) != len(logits):
        raise ValueError("sampling needs one uniform number per row")
    scaled = logits.astype(np.float64) / cfg.temperature
    if cfg.top_k == 0 and cfg.top_p >= 1.0:
        order = None
        probs = _softmax(scaled)
    else:
        order = np.argsort(-scaled, axis=-1, kind="stable")
        scaled = np.take_along_axis(scaled, order, -1)
        if 0 < cfg.top_k < scaled.shape[-1]:
            scaled[:, cfg.top_k:] = -np.inf
        probs = _softmax(scaled)
        if cfg.top_p < 1.0:
            before = np.cumsum(probs, -1) - probs  # mass of the more likely tokens
            probs = np.where(before < cfg.top_p, probs, 0.0)  # the top token always stays
            probs /= probs.sum(-1, keepdims=True)
    # the first entry whose cdf exceeds u * total: never one of probability zero
    cdf = np.cumsum(probs, -1)
    threshold = np.asarray(uniforms, np.float64)[:, None] * cdf[:, -1:]
    pick = np.minimum((cdf <= threshold).sum(-1), probs.shape[-1] - 1)
    if order is None:
        return pick
    return order[np.arange(len(pick)), pick]


def log_probs(logits: np.ndarray, tokens: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log softmax(logits / temperature)[token] per row, without top-k/top-p truncation.

    The generator records them at temperature 1 (`Completion.logprobs`), whatever it sampled
    with. With top-k and top-p off, `sample` draws from softmax(logits / temperature): GRPO's
    loss scores that distribution (mindxh/rl/objective.py), and its tests check it with this.
    """
    if temperature <= 0:
        raise SamplingError(f"temperature must be > 0 for log-probabilities, got {temperature}")
    x = logits.astype(np.float64) / temperature
    m = x.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[:, 0]
    return x[np.arange(len(tokens)), tokens] - lse
