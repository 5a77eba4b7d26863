"""Packed batches from a document source (the embedded generator), with exact resume.

Documents are encoded as ``<s> text </s>`` and packed like prepared pretraining data
(:class:`mindxh.data.packing.Packer` with ``split=True``): a document of ``L`` tokens fills
``L - 1`` slots (inputs ``doc[:-1]``, labels ``doc[1:]``), rows are the next ``seq_len``
slots, a document cut at a row's end continues in the next row, and every row numbers its
documents 1, 2, ... in ``segment_ids`` so that attention stays inside a document. No slot is
padding and no token is a target twice.

The whole position in the stream is the index of the next document to read plus the
not-yet-served slots; :meth:`PackedBatcher.state_dict` holds both, so a restored batcher
continues exactly as if it had never stopped.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import numpy as np

from mindxh.data.packing import positions_from_segments
from mindxh.tokenizer.spm import Tokenizer

__all__ = ["DocumentFactory", "PackedBatcher"]

logger = logging.getLogger(__name__)

DocumentFactory = Callable[[int], Iterator[tuple[int, str]]]
"""``make_iter(start)``: yields ``(doc_index, text)`` with increasing ``doc_index >= start``."""

_STATE_VERSION = 2


class PackedBatcher:
    """Batches of ``batch_size`` packed rows: input_ids, labels, positions, segment_ids [B, S]."""

    def __init__(
        self,
        make_iter: DocumentFactory,
        tokenizer: Tokenizer,
        seq_len: int,
        batch_size: int,
    ) -> None:
        if seq_len <= 0 or batch_size <= 0:
            raise ValueError(
                f"seq_len and batch_size must be positive, got {seq_len}, {batch_size}"
            )
        self._make_iter = make_iter
        self._tok = tokenizer
        self.seq_len = seq_len
        self.batch_size = batch_size
        self._next_doc = 0
        # unserved slots: input token, label, index of the document it belongs to
        self._inputs: list[int] = []
        self._labels: list[int] = []
        self._owner: list[int] = []
        self._batches_served = 0
        self._docs: Iterator[tuple[int, str]] | None = None

    @property
    def batches_served(self) -> int:
        return self._batches_served

    @property
    def next_document_index(self) -> int:
        return self._next_doc

    def iterate_documents(self) -> Iterator[tuple[int, str]]:
        """Documents from the saved position on; each is marked read as it is yielded.

        Only one pass is live at a time: the source is opened lazily at the
        next unread index and reopened after :meth:`load_state_dict`.
        """
        while True:
            if self._docs is None:
                self._docs = self._make_iter(self._next_doc)
            try:
                index, text = next(self._docs)
            except StopIteration:
                return
            if index < self._next_doc:
                raise ValueError(
                    f"document source went back: got index {index}, expected >= {self._next_doc}"
                )
            self._next_doc = index + 1
            yield index, text

    def next_batch(self) -> dict[str, np.ndarray]:
        """The next batch (int32 [batch_size, seq_len] arrays); StopIteration at the end."""
        need = self.batch_size * self.seq_len
        if len(self._inputs) < need:
            for index, text in self.iterate_documents():
                ids = self._tok.encode(text, bos=True, eos=True)
                self._inputs.extend(ids[:-1])
                self._labels.extend(ids[1:])
                self._owner.extend([index] * (len(ids) - 1))
                if len(self._inputs) >= need:
                    break
        if len(self._inputs) < need:
            raise StopIteration("document source exhausted")
        shape = (self.batch_size, self.seq_len)
        inputs = np.asarray(self._inputs[:need], np.int32).reshape(shape)
        labels = np.asarray(self._labels[:need], np.int32).reshape(shape)
        owner = np.asarray(self._owner[:need], np.int64).reshape(shape)
        for buf in (self._inputs, self._labels, self._owner):
            del buf[:need]
        change = np.ones(shape, np.int32)  # a new segment where the document changes
        change[:, 1:] = owner[:, 1:] != owner[:, :-1]
        segments = np.cumsum(change, axis=1, dtype=np.int32)
        self._batches_served += 1
        return {"input_ids": inputs, "labels": labels,
                "positions": positions_from_segments(segments), "segment_ids": segments}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while True:
            try:
                yield self.next_batch()
            except StopIteration:
                return

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position: next document, leftover slots, batches served."""
        return {
            "version": _STATE_VERSION,
            "next_document_index": self._next_doc,
            "inputs": list(self._inputs),
            "labels": list(self._labels),
            "owner": list(self._owner),
            "batches_served": self._batches_served,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "tokenizer_sha256": self._tok.sha256,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``; refuses a state made with another shape or tokenizer."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported batcher state version {state.get('version')!r} "
                             f"(this batcher writes version {_STATE_VERSION})")
        for key, mine in (
            ("seq_len", self.seq_len),
            ("batch_size", self.batch_size),
            ("tokenizer_sha256", self._tok.sha256),
        ):
            if state[key] != mine:
                raise ValueError(f"batcher state has {key}={state[key]!r}, this batcher {mine!r}")
        self._next_doc = int(state["next_document_index"])
        self._inputs = [int(t) for t in state["inputs"]]
        self._labels = [int(t) for t in state["labels"]]
        self._owner = [int(t) for t in state["owner"]]
        self._batches_served = int(state["batches_served"])
        self._docs = None
        logger.debug(
            "resumed batcher at document %d with %d buffered slots",
            self._next_doc,
            len(self._inputs),
        )
