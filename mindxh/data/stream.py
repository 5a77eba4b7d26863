"""Packed token batches with exact resume.

Documents are encoded as ``<s> text </s>`` and concatenated into one token
stream.  Each batch row is the next ``seq_len + 1`` tokens of that stream
(the caller takes ``row[:-1]`` as inputs and ``row[1:]`` as targets); rows
never overlap, so no token is trained on twice as a target.

The whole position in the stream is the index of the next document to read
plus the not-yet-served tokens; :meth:`PackedBatcher.state_dict` holds both,
so a restored batcher continues exactly as if it had never stopped.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import numpy as np

from mindxh.tokenizer.spm import Tokenizer

__all__ = ["DocumentFactory", "PackedBatcher"]

logger = logging.getLogger(__name__)

DocumentFactory = Callable[[int], Iterator[tuple[int, str]]]
"""``make_iter(start)``: yields ``(doc_index, text)`` with increasing ``doc_index >= start``."""

_STATE_VERSION = 1


class PackedBatcher:
    """Packs encoded documents into int32 ``[batch_size, seq_len + 1]`` batches."""

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
        self._buffer: list[int] = []
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

    def next_batch(self) -> np.ndarray:
        """The next ``[batch_size, seq_len + 1]`` int32 batch; StopIteration at the end."""
        need = self.batch_size * (self.seq_len + 1)
        if len(self._buffer) < need:
            for _, text in self.iterate_documents():
                self._buffer.extend(self._tok.encode(text, bos=True, eos=True))
                if len(self._buffer) >= need:
                    break
        if len(self._buffer) < need:
            raise StopIteration("document source exhausted")
        batch = np.asarray(self._buffer[:need], dtype=np.int32)
        del self._buffer[:need]
        self._batches_served += 1
        return batch.reshape(self.batch_size, self.seq_len + 1)

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            try:
                yield self.next_batch()
            except StopIteration:
                return

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position: next document, leftover tokens, batches served."""
        return {
            "version": _STATE_VERSION,
            "next_document_index": self._next_doc,
            "buffer": list(self._buffer),
            "batches_served": self._batches_served,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "tokenizer_sha256": self._tok.sha256,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``; refuses a state made with another shape or tokenizer."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported batcher state version {state.get('version')!r}")
        for key, mine in (
            ("seq_len", self.seq_len),
            ("batch_size", self.batch_size),
            ("tokenizer_sha256", self._tok.sha256),
        ):
            if state[key] != mine:
                raise ValueError(f"batcher state has {key}={state[key]!r}, this batcher {mine!r}")
        self._next_doc = int(state["next_document_index"])
        self._buffer = [int(t) for t in state["buffer"]]
        self._batches_served = int(state["batches_served"])
        self._docs = None
        logger.debug(
            "resumed batcher at document %d with %d buffered tokens",
            self._next_doc,
            len(self._buffer),
        )
