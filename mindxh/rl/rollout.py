"""From sampled groups to a training batch: advantages and static-shape arrays.

Everything here is NumPy on the host; it runs once per GRPO step on a few hundred
short sequences, so clarity wins over speed.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from mindxh.data.packing import IGNORE

__all__ = ["RolloutBatch", "build_batch", "group_advantages", "micro_batches", "shuffle_rewards"]


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
    # [N, T] float32: mask / (response tokens of kept groups in the whole sampled batch), so a
    # sum over any rows' tokens is their share of the token-level mean, and the sums of the
    # micro-batches add up to the mean over the batch
    weights: np.ndarray

    def rows(self, index) -> RolloutBatch:
        """The rows at `index` (an index array or a slice), every field cut alike."""
        return RolloutBatch(*(getattr(self, f.name)[index] for f in fields(self)))


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
    weights = (mask / max(float(mask.sum()), 1.0)).astype(np.float32)
    return RolloutBatch(input_ids, targets, mask, np.asarray(advantages, np.float32).reshape(-1),
                        weights)


def micro_batches(batch: RolloutBatch, rows: int) -> list[RolloutBatch]:
    """The rows that carry loss (response tokens of kept groups), in order, in pieces of
    `rows` rows; the last piece is padded with rows of zero weight (one static shape for the
    compiled step). Rows of groups with equal rewards weigh nothing in the loss, its gradient
    or its statistics, so they are left out instead of computed (in the tiny X1 runs: 3.5
    pieces per step on average instead of 4). No rows carry loss: no pieces."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    live = np.flatnonzero(batch.mask.any(axis=1))
    pieces = [batch.rows(live[start:start + rows]) for start in range(0, len(live), rows)]
    if pieces and len(pieces[-1].advantages) < rows:
        pieces[-1] = _concat(pieces[-1], _zero_rows(rows - len(pieces[-1].advantages),
                                                    batch.input_ids.shape[1]))
    return pieces


def _zero_rows(n: int, length: int) -> RolloutBatch:
    """Padding rows: no response tokens, so no weight, loss or gradient."""
    zeros = np.zeros((n, length), np.float32)
    return RolloutBatch(np.zeros((n, length), np.int32), np.full((n, length), IGNORE, np.int32),
                        zeros, np.zeros(n, np.float32), zeros.copy())


def _concat(a: RolloutBatch, b: RolloutBatch) -> RolloutBatch:
    return RolloutBatch(*(np.concatenate((getattr(a, f.name), getattr(b, f.name)))
                          for f in fields(RolloutBatch)))
