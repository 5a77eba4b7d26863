"""Deterministic interleaving of several datasets by weight, addressed by one integer.

Sample ``g`` of a mixture (g = 0, 1, 2, ... over the whole run, all ranks together) comes
from the dataset that smooth weighted round robin (the nginx scheduler) picks at tick ``g``.
With integer weights ``w_i`` summing to ``W`` that schedule repeats every ``W`` ticks and
picks dataset ``i`` exactly ``w_i`` times per period, spread as evenly as possible. So one
period table answers, in O(1) and without replaying the past, both "which dataset serves
sample g" and "which of that dataset's samples is it": the run's data position is the single
integer ``g``, and resuming at ``g`` continues the exact sequence.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

__all__ = ["Mixture", "integer_weights"]

MAX_PERIOD = 100_000  # beyond this, weights are rounded to 1e-4 of the total
_GRID = 10_000


def integer_weights(weights: Sequence[float]) -> list[int]:
    """Smallest integers in the same ratio as `weights` when they are short decimals
    (3 and 1, 0.7 and 0.3, 0.125...), else the ratio rounded to 1e-4 (never to 0)."""
    if not weights or any(not (w > 0 and math.isfinite(w)) for w in weights):
        raise ValueError(f"weights must be positive and finite, got {list(weights)}")
    exact = [Fraction(repr(float(w))) for w in weights]
    denom = math.lcm(*(f.denominator for f in exact))
    ints = [int(f * denom) for f in exact]
    common = math.gcd(*ints)
    ints = [i // common for i in ints]
    if sum(ints) <= MAX_PERIOD:
        return ints
    total = float(sum(weights))
    ints = [max(1, round(w / total * _GRID)) for w in weights]
    common = math.gcd(*ints)
    return [i // common for i in ints]


class Mixture:
    """Maps global sample numbers to (dataset index, sample number within that dataset)."""

    def __init__(self, weights: Sequence[float]):
        self.weights = integer_weights(weights)
        n, period = len(self.weights), sum(self.weights)
        w = np.asarray(self.weights, np.int64)
        current = np.zeros(n, np.int64)
        counts = np.zeros(n, np.int64)
        self._choice = np.empty(period, np.int64)
        self._before = np.empty((period, n), np.int64)  # picks of each dataset before tick k
        for k in range(period):
            self._before[k] = counts
            current += w
            i = int(np.argmax(current))  # ties: the lowest index, deterministically
            current[i] -= period
            self._choice[k] = i
            counts[i] += 1
        self.period = period

    def locate(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global sample numbers -> (dataset index, that dataset's sample number), int64 arrays."""
        g = np.asarray(samples, np.int64)
        if g.size and g.min() < 0:
            raise ValueError("sample numbers must be >= 0")
        cycle, tick = np.divmod(g, self.period)
        dataset = self._choice[tick]
        within = cycle * np.asarray(self.weights, np.int64)[dataset] + self._before[tick, dataset]
        return dataset, within
