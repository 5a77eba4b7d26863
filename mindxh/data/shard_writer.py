"""Packed rows -> ``shard-NNNNN.mindrecord`` files (format: :mod:`mindxh.data.shards`).

Rows arrive in order and get consecutive ``row_id``; every ``rows_per_shard`` rows the
current file is committed and hashed. Rows are handed to ``FileWriter.write_raw_data``
in batches of ~16 MiB, because its per-call cost is high and its per-row cost (Python,
~100 µs) is what limits it: about 8k rows/s at seq_len 128 but 3k rows/s (6 M tokens/s)
at 2048 on this project's CPU, so at realistic sequence lengths it is not the bottleneck.

FileWriter *drops* a row that does not match the schema, with only a warning; we check
the count after every batch and fail instead.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from mindxh.data import shards
from mindxh.data.packing import IGNORE
from mindxh.utils.fsio import fsync_path as _fsync

__all__ = ["HEADER_BYTES", "ShardWriter", "default_rows_per_shard"]

log = logging.getLogger(__name__)

# MindRecord reserves a fixed header per file (16 MiB by default) that holds the schema
# and one small entry per 32 MiB data page; 1 MiB holds thousands of pages, far more
# than a shard of default size needs, and does not waste 16 MiB on every small shard.
HEADER_BYTES = 1 << 20
# Data pages are 32 MiB by default and the last one of a file is padded out (sparse, but
# a copy or a checksum reads it all); 8 MiB wastes less and reads as fast.
_PAGE_BYTES = 8 << 20
_TARGET_SHARD_BYTES = 256 << 20
_BATCH_BYTES = 16 << 20


def default_rows_per_shard(seq_len: int) -> int:
    """Rows that make a ~256 MiB shard (three int32 arrays a row)."""
    return max(1, _TARGET_SHARD_BYTES // (12 * seq_len))


class ShardWriter:
    """Writes rows into ``directory``; :meth:`close` returns the manifest's shard entries."""

    def __init__(self, directory: str | Path, seq_len: int, rows_per_shard: int,
                 on_shard: Callable[[int], None] | None = None):
        if rows_per_shard <= 0:
            raise ValueError(f"rows_per_shard must be positive, got {rows_per_shard}")
        from mindspore.mindrecord import FileWriter  # ~1.5 s import: only when writing

        self._file_writer_cls = FileWriter
        self.directory = Path(directory)
        self.seq_len, self.rows_per_shard = seq_len, rows_per_shard
        self._on_shard = on_shard
        self._batch_rows = max(1, min(rows_per_shard, _BATCH_BYTES // (12 * seq_len)))
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._writer = None
        self._shard_rows = 0
        self.entries: list[dict] = []
        self.rows = self.tokens = self.loss_tokens = 0

    def write(self, inputs: np.ndarray, labels: np.ndarray, segments: np.ndarray) -> None:
        """Append rows (int32 [n, seq_len] each)."""
        n = inputs.shape[0]
        if n == 0:
            return
        if inputs.shape[1] != self.seq_len:
            raise ValueError(f"rows of {inputs.shape[1]} tokens, expected {self.seq_len}")
        self.tokens += int(np.count_nonzero(segments))
        self.loss_tokens += int(np.count_nonzero(labels != IGNORE))
        self._pending.append((inputs, labels, segments))
        self._pending_rows += n
        while self._pending_rows >= min(self._batch_rows, self.rows_per_shard - self._shard_rows):
            self._drain(min(self._batch_rows, self.rows_per_shard - self._shard_rows))

    def close(self) -> list[dict]:
        """Write what is pending, commit the last shard; the shard entries."""
        while self._pending_rows:
            self._drain(min(self._pending_rows, self._batch_rows, self.rows_per_shard - self._shard_rows))
        if self._writer is not None:
            self._commit()
        return self.entries

    def abort(self) -> None:
        """Drop the open file handle (after an error; the caller removes the directory)."""
        self._writer = None
        self._pending, self._pending_rows = [], 0

    def _drain(self, n: int) -> None:
        """Write the first ``n`` pending rows as one FileWriter batch."""
        if len(self._pending) == 1:
            inputs, labels, segments = self._pending[0]
        else:
            inputs, labels, segments = (np.concatenate([p[j] for p in self._pending]) for j in range(3))
        rest = (inputs[n:], labels[n:], segments[n:])
        self._pending = [rest] if rest[0].shape[0] else []
        self._pending_rows = rest[0].shape[0]
        if self._writer is None:
            self._open()
        first = self.rows
        batch = [{"row_id": first + i, "input_ids": inputs[i], "labels": labels[i],
                  "segment_ids": segments[i]} for i in range(n)]
        self._writer.write_raw_data(batch)
        if len(batch) != n:  # FileWriter removed rows it judged invalid
            raise RuntimeError(f"MindRecord FileWriter dropped {n - len(batch)} of {n} rows "
                               f"(rows {first}..{first + n - 1}); see its warnings")
        self.rows += n
        self._shard_rows += n
        if self._shard_rows == self.rows_per_shard:
            self._commit()

    def _open(self) -> None:
        name = shards.shard_name(len(self.entries))
        self._writer = self._file_writer_cls(str(self.directory / name), shard_num=1, overwrite=True)
        self._writer.set_header_size(HEADER_BYTES)
        self._writer.set_page_size(_page_bytes(self.seq_len))
        self._writer.add_schema(shards.SCHEMA, shards.SCHEMA_DESC)
        self._shard_rows = 0

    def _commit(self) -> None:
        self._writer.commit()
        self._writer = None
        name = shards.shard_name(len(self.entries))
        path = self.directory / name
        umask = os.umask(0)
        os.umask(umask)
        for p in (path, self.directory / shards.db_name(name)):
            os.chmod(p, 0o666 & ~umask)  # FileWriter makes them 0600; a dataset is meant to be shared
            _fsync(p)
        self.entries.append({"file": name, "rows": self._shard_rows, "first_row": self.rows - self._shard_rows,
                             "sha256": shards.file_sha256(path),
                             "db_sha256": shards.file_sha256(self.directory / shards.db_name(name)),
                             "bytes": path.stat().st_size})
        log.debug("wrote %s: %d rows", path, self._shard_rows)
        self._shard_rows = 0
        if self._on_shard is not None:
            self._on_shard(len(self.entries))


def _page_bytes(seq_len: int) -> int:
    """A page must hold at least one row: 8 MiB, or the power of two above two rows."""
    need = 2 * (12 * seq_len + 64)
    return min(max(_PAGE_BYTES, 1 << (need - 1).bit_length()), 256 << 20)
