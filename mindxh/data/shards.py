"""The on-disk format of a prepared (tokenised, packed) dataset: ``mindxh-packed-v1``.

Written by :mod:`mindxh.data.prepare` (``mindxh data prepare``), read by the training
loader. One directory holds::

    manifest.json                 written last and atomically: its presence means "complete"
    shard-00000.mindrecord        MindRecord file (mindspore.mindrecord.FileWriter)
    shard-00000.mindrecord.db     its index (SQLite), made by FileWriter.commit()
    shard-00001.mindrecord ...

Every MindRecord row is one packed training row (a :class:`mindxh.data.packing.PackedRow`):
``row_id`` int64 (the global row index, 0..rows-1, in order across shards) and three int32
arrays of length ``seq_len``: ``input_ids``, ``labels`` (-100 = no loss) and
``segment_ids`` (0 = padding). The manifest records the sha256 of every shard file and
index, so a reader can refuse a damaged dataset (:func:`verify_shards`) instead of
training on it.

This module only reads; it imports no MindSpore, so a loader can use it anywhere.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mindxh.errors import MindxhError
from mindxh.utils.fsio import file_sha256

__all__ = [
    "ARRAY_FIELDS", "FORMAT", "MANIFEST_NAME", "SCHEMA", "SCHEMA_DESC", "ShardError",
    "db_name", "file_sha256", "is_shard_file", "load_manifest", "shard_name",
    "shard_paths", "verify_shards",
]

FORMAT = "mindxh-packed-v1"
MANIFEST_NAME = "manifest.json"
SCHEMA_DESC = "mindxh packed rows"
ARRAY_FIELDS = ("input_ids", "labels", "segment_ids")
# The FileWriter schema, exactly: one row per packed training row.
SCHEMA: dict[str, dict[str, Any]] = {
    "row_id": {"type": "int64"},
    "input_ids": {"type": "int32", "shape": [-1]},
    "labels": {"type": "int32", "shape": [-1]},
    "segment_ids": {"type": "int32", "shape": [-1]},
}
_SHARD_RE = re.compile(r"^shard-\d{5,}\.mindrecord(\.db)?$")
_REQUIRED_KEYS = ("format", "kind", "seq_len", "tokenizer", "rows", "shards")


class ShardError(MindxhError):
    """A prepared dataset is missing, incomplete, of another format, or damaged."""


def shard_name(index: int) -> str:
    """File name of shard ``index`` (``shard-00000.mindrecord``)."""
    return f"shard-{index:05d}.mindrecord"


def db_name(shard_file: str) -> str:
    """The index file FileWriter writes next to a shard."""
    return shard_file + ".db"


def is_shard_file(name: str) -> bool:
    """True for names this format writes (shards and their ``.db`` indexes)."""
    return bool(_SHARD_RE.match(name))


def load_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a complete prepared dataset; ShardError if there is none or it is
    not ``mindxh-packed-v1`` (a directory without one is an interrupted preparation)."""
    d = Path(directory)
    path = d / MANIFEST_NAME
    if not d.is_dir():
        raise ShardError(f"{d}: no such dataset directory")
    if not path.is_file():
        raise ShardError(f"{d} has no {MANIFEST_NAME}: not a prepared dataset, or its "
                         "preparation did not finish (run `mindxh data prepare` again)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ShardError(f"{path}: format is {found!r}, expected {FORMAT!r}")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ShardError(f"{path}: manifest lacks {', '.join(missing)}")
    return manifest


def shard_paths(directory: str | Path, manifest: dict[str, Any] | None = None) -> list[Path]:
    """The shard files in row order (``MindDataset(dataset_files=[str(p) for p in ...])``)."""
    manifest = manifest if manifest is not None else load_manifest(directory)
    return [Path(directory) / s["file"] for s in manifest["shards"]]


def verify_shards(directory: str | Path) -> dict[str, Any]:
    """Check every shard and index file against the manifest's sha256 and row counts;
    return the manifest, or raise ShardError naming the first bad shard file."""
    d = Path(directory)
    manifest = load_manifest(d)
    first_row = 0
    for shard in manifest["shards"]:
        if shard.get("first_row") != first_row:
            raise ShardError(f"{d / shard['file']}: first_row is {shard.get('first_row')}, "
                             f"expected {first_row} (manifest rows are not contiguous)")
        first_row += int(shard["rows"])
        for name, key in ((shard["file"], "sha256"), (db_name(shard["file"]), "db_sha256")):
            path = d / name
            if not path.is_file():
                raise ShardError(f"{path}: shard file missing")
            actual = file_sha256(path)
            if actual != shard[key]:
                raise ShardError(f"{path}: checksum mismatch (sha256 {actual[:12]}..., manifest "
                                 f"says {shard[key][:12]}...): the shard is damaged; prepare it again")
    if first_row != manifest["rows"]:
        raise ShardError(f"{d / MANIFEST_NAME}: shards hold {first_row} rows, manifest says "
                         f"{manifest['rows']}")
    return manifest
