"""Test helper: write a prepared dataset (mindxh-packed-v1) from packed rows, small and fast.

Same on-disk format as `mindxh data prepare` (see mindxh/data/shards.py): MindRecord shards
with row_id, input_ids, labels, segment_ids, and a manifest with every file's sha256.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mindxh.data import shards
from mindxh.data.packing import PackedRow, Packer


def packed_rows(docs, seq_len: int) -> list[PackedRow]:
    """Documents (token id lists) packed like pretraining data: split across rows, last row padded."""
    packer = Packer(seq_len, split=True)
    rows = [row for doc in docs for row in packer.add(doc)]
    return rows + list(packer.flush())


def random_rows(n: int, seq_len: int, vocab: int, seed: int = 0) -> list[PackedRow]:
    """`n` rows of random documents (ids 3..vocab-1), each row its own marker in input_ids[0]."""
    rng = np.random.default_rng(seed)
    docs, total = [], 0
    while total < n * seq_len + seq_len:
        length = int(rng.integers(2, seq_len))
        docs.append(rng.integers(3, vocab, size=length))
        total += length - 1
    return packed_rows(docs, seq_len)[:n]


def write_prepared(directory: Path, rows: list[PackedRow], seq_len: int, tokenizer_sha256: str,
                   tokenizer_path: str = "tok.model", vocab_size: int = 512, kind: str = "pretrain",
                   shard_rows: int = 64) -> Path:
    from mindspore.mindrecord import FileWriter

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    entries, first = [], 0
    for index, start in enumerate(range(0, len(rows), shard_rows)):
        name = shards.shard_name(index)
        chunk = rows[start:start + shard_rows]
        writer = FileWriter(str(directory / name), shard_num=1, overwrite=True)
        writer.add_schema(shards.SCHEMA, shards.SCHEMA_DESC)
        writer.write_raw_data([{"row_id": first + k, "input_ids": r.input_ids, "labels": r.labels,
                                "segment_ids": r.segment_ids} for k, r in enumerate(chunk)])
        writer.commit()
        entries.append({"file": name, "rows": len(chunk), "first_row": first,
                        "sha256": shards.file_sha256(directory / name),
                        "db_sha256": shards.file_sha256(directory / shards.db_name(name))})
        first += len(chunk)
    loss_tokens = int(sum((r.labels != -100).sum() for r in rows))
    manifest = {"format": shards.FORMAT, "kind": kind, "seq_len": seq_len,
                "tokenizer": {"path": tokenizer_path, "sha256": tokenizer_sha256,
                              "vocab_size": vocab_size},
                "documents": int(sum(int(r.segment_ids.max()) for r in rows)),
                "tokens": int(sum((r.segment_ids > 0).sum() for r in rows)),
                "loss_tokens": loss_tokens, "rows": len(rows), "shards": entries}
    (directory / shards.MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return directory


def masked_dataset(directory: Path, tokenizer_sha256: str, n: int = 96, seq_len: int = 64,
                   seed: int = 0, empty_rows: frozenset[int] = frozenset()) -> Path:
    """SFT-like rows: random documents whose first 4..seq_len-5 labels are masked (a prompt),
    so rows, ranks and micro-batches hold different numbers of loss tokens; the rows numbered
    in `empty_rows` have none at all."""
    from dataclasses import replace

    from mindxh.data.packing import IGNORE

    rng = np.random.default_rng(seed)
    rows = []
    for row in random_rows(n, seq_len, 512, seed):
        labels = row.labels.copy()
        labels[: int(rng.integers(4, seq_len - 4))] = IGNORE
        if len(rows) in empty_rows:
            labels[:] = IGNORE
        rows.append(replace(row, labels=labels))
    return write_prepared(directory, rows, seq_len, tokenizer_sha256, kind="sft")
