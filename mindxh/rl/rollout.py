"""From sampled groups to a training batch: advantages and static-shape arrays.

Everything here is NumPy on the host; it runs once per GRPO step on a few hundred
short sequences, so clarity wins over speed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mindxh.data.packing import IGNORE

__all__ = ["RolloutBatch", "build_batch", "group_advantages", "shuffle_rewards"]


def group_advantages(rewards: np.ndarray, skip_uniform: bool = True,
                     eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """rewards [P, G] -> (advantages [P, G], kept [P]).

    A_ij = (r_ij - mean_j r_ij) / (std_j r_ij + eps): each response is judged only
    against the other answers to the same prompt, so no value network is needed. A group
    whose rewards are all equal says nothing about which response was better; with
    `skip_uniform` it gets advantage 0 and `kept` False.
    """
    r = np.asarray(rewards, np.float64)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"rewards must be [prompts, group >= 2], got shape {r.shape}")
    mean = r.mean(axis=1, keepdims=True)
    std = r.std(axis=1, keepdims=True)
    adv = (r - mean) / (std + eps)
    kept = std[:, 0] > 1e-8 if skip_uniform else np.ones(r.shape[0], bool)
    adv[~kept] = 0.0
    return adv.astype(np.float32), kept


def shuffle_rewards(rewards: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Control experiment: the same rewards, permuted across the whole batch, so they no
    longer say anything about the response they are attached to."""
    flat = np.asarray(rewards).reshape(-1).copy()
    rng.shuffle(flat)
    return flat.reshape(np.shape(rewards))


@dataclass
class RolloutBatch:
    input_ids: np.ndarray  # [N, T] int32
    targets: np.ndarray  # [N, T] int32, IGNORE outside the response
    mask: np.ndarray  # [N, T] float32, 1 on response tokens of kept groups
    advantages: np.ndarray  # [N] float32


def build_batch(prompts: list[list[int]], responses: list[list[int]], advantages: np.ndarray,
                kept: np.ndarray, length: int, pad_id: int = 0) -> RolloutBatch:
    """Rows `prompt + response`, right-padded to `length` inputs; the loss reads only the
    response tokens (the prompt is given, not generated). Row i belongs to group i // G."""
    n = len(prompts)
    group = n // len(kept)
    input_ids = np.full((n, length), pad_id, np.int32)
    targets = np.full((n, length), IGNORE, np.int32)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        seq = list(p) + list(r)
        if len(seq) - 1 > length:
            raise ValueError(f"prompt ({len(p)}) + response ({len(r)}) tokens exceed the "
                             f"{length}-token training row; raise the row length")
        input_ids[i, :len(seq) - 1] = seq[:-1]
        targets[i, len(p) - 1:len(seq) - 1] = r
    row_kept = np.repeat(np.asarray(kept, bool), group)
    mask = ((targets != IGNORE) & row_kept[:, None]).astype(np.float32)
    return RolloutBatch(input_ids, targets, mask, np.asarray(advantages, np.float32).reshape(-1))
