"""Input files for ``mindxh data prepare``: formats, chunking, and bad-input accounting.

Formats (by file name):

* ``.jsonl`` / ``.ndjson`` (optionally ``.gz``): one JSON object per line; pretraining
  reads its ``text`` field, SFT its ``messages`` or ``prompt`` + ``response``.
  Blank lines are ignored.
* ``.txt`` (optionally ``.gz``): plain text, pretraining only. One document per
  paragraph block: documents are separated by one or more blank (whitespace-only)
  lines, and the lines of a block are joined with ``"\\n"`` (``\\r\\n`` becomes ``\\n``).
  A file without blank lines is one document.
* ``.parquet``: a ``text`` column (pretraining), or ``messages`` or ``prompt`` and
  ``response`` columns (SFT). "Line" numbers of a Parquet file are 1-based row numbers.

Files are read as bytes in ~1 MiB chunks that end on a record boundary, so the slow work
(UTF-8 decoding, JSON parsing, tokenising) runs in worker processes and the main process
only moves bytes. Each bad record is counted by reason with its line number
(:class:`SkipLog`) and skipped; under ``--strict`` the first one is fatal.
"""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from mindxh.errors import MindxhError

__all__ = ["Chunk", "PrepareError", "REASONS", "Skip", "SkipLog", "check_input",
           "classify_chat_error", "input_format", "parse_chunk", "read_chunks"]

# reason key (as in the manifest) -> what it means
REASONS = {
    "undecodable": "not valid UTF-8",
    "malformed_json": "malformed JSON",
    "missing_field": "missing field",
    "wrong_type": "wrong type",
    "bad_chat": "invalid chat sample",
    "empty": "empty document",
    "too_long": "over-long document",
}
FIRST_LINES = 5  # line numbers kept per reason and file
_BOM = b"\xef\xbb\xbf"
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt", ".parquet": "parquet"}
_PARQUET_BATCH_ROWS = 2048


class PrepareError(MindxhError, ValueError):
    """The input or output of a preparation is unusable; the message names the file (and line)."""


class Skip(Exception):
    """One bad record: ``reason`` is a key of REASONS, ``detail`` says what exactly."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class Chunk:
    """A run of whole records of one file, handed to a worker."""

    source: int          # index of the input file
    fmt: str             # jsonl | txt | parquet
    first_line: int      # 1-based line (row) number of the first record
    payload: Any         # bytes, or a pyarrow RecordBatch for parquet
    nbytes: int          # input bytes it covers (progress)


@dataclass
class SkipLog:
    """Skipped records of one file: count and first line numbers per reason."""

    path: str
    counts: Counter = field(default_factory=Counter)
    lines: dict[str, list[int]] = field(default_factory=dict)

    def add(self, reason: str, line: int) -> None:
        self.counts[reason] += 1
        first = self.lines.setdefault(reason, [])
        if len(first) < FIRST_LINES:
            first.append(line)

    def summary(self) -> str:
        """``3 malformed_json (lines 4, 9, 12), 1 empty (line 7)``."""
        parts = []
        for reason, n in sorted(self.counts.items()):
            lines = self.lines[reason]
            where = ", ".join(map(str, lines)) + (", ..." if n > len(lines) else "")
            parts.append(f"{n} {reason} (line{'s' if len(lines) > 1 else ''} {where})")
        return ", ".join(parts)


def input_format(path: str | Path) -> tuple[str, bool]:
    """(format, gzipped) from the file name; PrepareError for anything else."""
    name = Path(path).name.lower()
    gz = name.endswith(".gz")
    suffix = Path(name[:-3] if gz else name).suffix
    fmt = _FORMATS.get(suffix)
    if fmt is None or (gz and fmt == "parquet"):
        raise PrepareError(f"{path}: unknown input format; expected .jsonl, .ndjson, .txt "
                           "(each optionally .gz) or .parquet")
    return fmt, gz


def check_input(path: str | Path, kind: str) -> None:
    """Fail before any work on a file that cannot hold ``kind`` records at all."""
    if Path(path).is_dir():
        raise PrepareError(f"{path}: is a directory; give the files in it (e.g. {path}/*.jsonl)")
    fmt, _ = input_format(path)
    if not Path(path).is_file():
        raise PrepareError(f"{path}: input file not found")
    if fmt == "txt" and kind != "pretrain":
        raise PrepareError(f"{path}: plain text is pretraining data; --kind {kind} needs JSONL "
                           "or Parquet with 'messages' or 'prompt' and 'response'")
    if fmt == "parquet":
        _parquet_columns(Path(path), kind)


def read_chunks(source: int, path: str | Path, kind: str, chunk_bytes: int = 1 << 20) -> Iterator[Chunk]:
    """The file as chunks of whole records, in order."""
    check_input(path, kind)
    fmt, gz = input_format(path)
    if fmt == "parquet":
        yield from _parquet_chunks(source, Path(path), kind)
        return
    boundary = _last_newline if fmt == "jsonl" else _last_blank_line
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
        line, done, buf, first = 1, 0, b"", True
        while True:
            try:
                block = stream.read(chunk_bytes)
            except (OSError, EOFError) as exc:
                raise PrepareError(f"{path}: cannot read (corrupt gzip?): {exc}") from exc
            if first and block.startswith(_BOM):
                block = block[len(_BOM):]
            first = False
            buf += block
            cut = len(buf) if not block else boundary(buf)
            if cut > 0:
                body, buf = buf[:cut], buf[cut:]
                pos = raw.tell()
                yield Chunk(source, fmt, line, body, pos - done)
                line, done = line + body.count(b"\n"), pos
            if not block:
                return


def _last_newline(buf: bytes) -> int:
    return buf.rfind(b"\n") + 1


def _last_blank_line(buf: bytes) -> int:
    """End of the last blank line in buf (0 if none): a cut there never splits a paragraph."""
    lf, crlf = buf.rfind(b"\n\n"), buf.rfind(b"\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 3 if crlf >= 0 else 0)


def _parquet_columns(path: Path, kind: str):
    """(ParquetFile, the columns ``kind`` reads), or PrepareError naming what is missing."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise PrepareError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise PrepareError(f"{path}: not a readable Parquet file: {exc}") from exc
    names = set(pf.schema_arrow.names)
    if kind == "pretrain":
        columns = ["text"]
    else:
        columns = ["messages"] if "messages" in names else ["prompt", "response"]
    missing = [c for c in columns if c not in names]
    if missing:
        need = "'text'" if kind == "pretrain" else "'messages', or 'prompt' and 'response'"
        raise PrepareError(f"{path}: no column {', '.join(map(repr, missing))} (--kind {kind} "
                           f"needs {need}; columns are {sorted(names)})")
    return pf, columns


def _parquet_chunks(source: int, path: Path, kind: str) -> Iterator[Chunk]:
    pf, columns = _parquet_columns(path, kind)
    size, total, row = path.stat().st_size, max(pf.metadata.num_rows, 1), 1
    for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
        yield Chunk(source, "parquet", row, batch, size * batch.num_rows // total)
        row += batch.num_rows


# -- worker side: chunk -> (line, record) or Skip -------------------------------------------

def parse_chunk(chunk: Chunk, kind: str, max_doc_chars: int) -> Iterator[tuple[int, Any]]:
    """``(line, record)`` for each record: the text (pretraining) or the chat sample (SFT),
    or ``(line, Skip)`` for a bad one."""
    if chunk.fmt == "jsonl":
        records = _jsonl_records(chunk)
    elif chunk.fmt == "txt":
        records = _txt_records(chunk)
    else:
        records = _parquet_records(chunk, kind)
    check = _pretrain_text if kind == "pretrain" else _chat_sample
    for line, value in records:
        if not isinstance(value, Skip):
            try:
                value = check(value, chunk.fmt, max_doc_chars)
            except Skip as skip:
                value = skip
        yield line, value


def _jsonl_records(chunk: Chunk) -> Iterator[tuple[int, Any]]:
    for i, raw in enumerate(chunk.payload.split(b"\n")):
        if not raw.strip():
            continue
        line = chunk.first_line + i
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield line, Skip("undecodable", f"not valid UTF-8 at byte {exc.start}")
            continue
        try:
            yield line, json.loads(text)
        except json.JSONDecodeError as exc:
            yield line, Skip("malformed_json", f"malformed JSON: {exc.msg} at column {exc.colno}")
        except RecursionError:
            yield line, Skip("malformed_json", "malformed JSON: nested too deeply")


def _blank(raw: bytes) -> bool:
    """A paragraph break: a line of whitespace only, Unicode spaces included (an ideographic
    space U+3000 separates paragraphs in CJK text); short lines only are decoded to check."""
    text = raw.strip()
    return not text or len(text) <= 12 and not text.decode("utf-8", "replace").strip()


def _txt_records(chunk: Chunk) -> Iterator[tuple[int, Any]]:
    block: list[bytes] = []
    start = 0
    lines = chunk.payload.split(b"\n")
    for i, raw in enumerate(lines + [b""]):
        if not _blank(raw):
            if not block:
                start = chunk.first_line + i
            block.append(raw[:-1] if raw.endswith(b"\r") else raw)
        elif block:
            try:
                yield start, b"\n".join(block).decode("utf-8")
            except UnicodeDecodeError as exc:
                yield start, Skip("undecodable", f"not valid UTF-8 at byte {exc.start} of the paragraph")
            block = []


def _parquet_records(chunk: Chunk, kind: str) -> Iterator[tuple[int, Any]]:
    batch = chunk.payload
    cols = {name: batch.column(name).to_pylist() for name in batch.schema.names}
    for i in range(batch.num_rows):
        line = chunk.first_line + i
        if kind == "pretrain":
            text = cols["text"][i]
            yield line, ({"text": text} if text is not None else {})
        else:
            yield line, {k: v[i] for k, v in cols.items() if v[i] is not None}


def _pretrain_text(value: Any, fmt: str, max_doc_chars: int) -> str:
    if fmt != "txt":
        if not isinstance(value, dict):
            raise Skip("wrong_type", f"expected a JSON object, got {_json_type(value)}")
        if "text" not in value:
            raise Skip("missing_field", "missing field 'text'")
        value = value["text"]
        if not isinstance(value, str):
            raise Skip("wrong_type", f"'text' must be a string, got {_json_type(value)}")
    if not value.strip():
        raise Skip("empty", "empty document")
    if max_doc_chars and len(value) > max_doc_chars:
        raise Skip("too_long", f"document of {len(value):,} characters > --max-doc-chars {max_doc_chars:,}")
    return value


def _chat_sample(value: Any, fmt: str, max_doc_chars: int) -> dict:
    if not isinstance(value, dict):
        raise Skip("wrong_type", f"expected a JSON object, got {_json_type(value)}")
    return value  # validated by render_chat in the worker (ChatFormatError -> classify_chat_error)


_CHAT_MISSING = re.compile(r"missing field|needs 'role' and 'content'")


def classify_chat_error(message: str) -> str:
    """Reason key for a ChatFormatError message."""
    if _CHAT_MISSING.search(message):
        return "missing_field"
    if "must be" in message:
        return "wrong_type"
    if "nothing to learn from" in message:
        return "empty"
    return "bad_chat"


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value), type(value).__name__)
