"""Packing tokenised documents into fixed-length training rows.

A packed row holds several documents side by side. Three int32 arrays of length
``seq_len`` describe it, and they are all the model needs:

* ``input_ids``: the tokens fed in (0 = padding);
* ``labels``: the next token to predict at each position, or ``IGNORE`` (-100) where
  no loss is taken: padding, the last token of a document (its "next token" would
  belong to another document), and, for SFT, every token that is not the assistant's;
* ``segment_ids``: 1, 2, 3... one id per document in the row, 0 for padding. The model
  lets a token attend only to earlier tokens with the same id, and ``positions``
  (:func:`positions_from_segments`) restart at 0 in every segment, so a packed
  document is computed exactly as if it were alone.

A document of ``L`` tokens fills ``L - 1`` slots (inputs ``doc[:-1]``, labels
``doc[1:]``). With ``split=True`` (pretraining) a document that does not fit in the
rest of a row continues in the next row as a new segment, so no slot is wasted; with
``split=False`` (SFT) a sample is kept whole: it starts a new row if it does not fit,
and one longer than a row is refused (the caller counts it as over-long).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["IGNORE", "PackedRow", "Packer", "positions_from_segments", "stack_rows"]

IGNORE = -100


@dataclass
class PackedRow:
    input_ids: np.ndarray
    labels: np.ndarray
    segment_ids: np.ndarray


class Packer:
    """Streams documents in, complete rows out; deterministic, no reordering."""

    def __init__(self, seq_len: int, split: bool = True):
        if seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {seq_len}")
        self.seq_len = seq_len
        self.split = split
        self._new_row()

    def _new_row(self) -> None:
        s = self.seq_len
        self._inputs = np.zeros(s, np.int32)
        self._labels = np.full(s, IGNORE, np.int32)
        self._segments = np.zeros(s, np.int32)
        self._used = 0
        self._segment = 0

    def _emit(self) -> PackedRow:
        row = PackedRow(self._inputs, self._labels, self._segments)
        self._new_row()
        return row

    def add(self, ids, loss_mask=None) -> Iterator[PackedRow]:
        """Add one document (token ids, optional 0/1 mask over its tokens: 1 = learn to
        produce this token); yield the rows it completes. Documents under 2 tokens teach
        nothing and are dropped."""
        ids = np.asarray(ids, np.int32)
        if ids.shape[0] < 2:
            return
        labels = ids[1:].copy()
        if loss_mask is not None:
            mask = np.asarray(loss_mask)
            if mask.shape != ids.shape:
                raise ValueError(f"loss_mask has shape {mask.shape}, ids {ids.shape}")
            labels[mask[1:] == 0] = IGNORE
        inputs = ids[:-1]
        n = inputs.shape[0]
        if not self.split:
            if n > self.seq_len:
                raise ValueError(f"a {ids.shape[0]}-token sample does not fit a {self.seq_len}-token row")
            if self._used + n > self.seq_len:
                yield self._emit()
        start = 0
        while start < n:
            take = min(n - start, self.seq_len - self._used)
            lo, hi = self._used, self._used + take
            self._segment += 1
            self._inputs[lo:hi] = inputs[start:start + take]
            self._labels[lo:hi] = labels[start:start + take]
            self._segments[lo:hi] = self._segment
            self._used = hi
            start += take
            if self._used == self.seq_len:
                yield self._emit()

    def flush(self) -> Iterator[PackedRow]:
        """The last, padded row, if it holds anything."""
        if self._used:
            yield self._emit()


def positions_from_segments(segment_ids: np.ndarray) -> np.ndarray:
    """Position of each token inside its segment, restarting at 0 where the id changes
    ([..., S] int32 in and out; padding gets positions too, harmless as it is masked)."""
    seg = np.asarray(segment_ids)
    s = seg.shape[-1]
    idx = np.broadcast_to(np.arange(s, dtype=np.int32), seg.shape)
    change = np.ones(seg.shape, bool)
    change[..., 1:] = seg[..., 1:] != seg[..., :-1]
    starts = np.maximum.accumulate(np.where(change, idx, 0), axis=-1)
    return (idx - starts).astype(np.int32)


def stack_rows(rows: list[PackedRow]) -> dict[str, np.ndarray]:
    """Rows -> the batch the loss cell takes: input_ids, labels, positions, segment_ids."""
    seg = np.stack([r.segment_ids for r in rows])
    return {"input_ids": np.stack([r.input_ids for r in rows]),
            "labels": np.stack([r.labels for r in rows]),
            "positions": positions_from_segments(seg),
            "segment_ids": seg}
