"""95% confidence intervals for the report: accuracies and paired gains on one test set.

On 500 problems an accuracy is uncertain by about +-4 points, so a figure without an
interval cannot tell a +3 gain from noise. Two models judged on the *same* problems are
compared by the per-problem differences (paired), which is much tighter than subtracting
two independent intervals: most problems are solved by both or by neither.
"""
from __future__ import annotations

import math

__all__ = ["Z95", "paired_difference", "wilson"]

Z95 = 1.959964


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound near 0 and 1, unlike the normal one)."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n and n > 0, got {correct}/{n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(after: str, before: str, z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high) of after_i - before_i over problems, each given as a "1"/"0" string
    in the same problem order: mean +- z * sd / sqrt(n), sd with n - 1 (normal approximation)."""
    if len(after) != len(before) or not after:
        raise ValueError(f"need two equally long, non-empty result strings, got {len(after)} "
                         f"and {len(before)}")
    if len(after) < 2:
        raise ValueError("a paired interval needs at least 2 problems")
    diffs = [int(a) - int(b) for a, b in zip(after, before)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = z * sd / math.sqrt(n)
    return mean, mean - half, mean + half
