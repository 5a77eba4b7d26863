"""``mindxh data prepare``: input files -> tokenised, packed MindRecord shards + manifest.

The pipeline, and why it is shaped so:

1. The main process reads each input as ~1 MiB chunks of whole records
   (:mod:`mindxh.data.readers`) and hands them to worker processes
   (:mod:`mindxh.data.prepare_worker`), which decode, parse, validate and tokenise.
   At most ``2 * workers + 2`` chunks are in flight, so memory stays flat on any input.
2. Results are consumed strictly in input order, packed with numpy
   (:mod:`mindxh.data.bulk_pack`, the rows of ``packing.Packer``) and written by one
   FileWriter (:mod:`mindxh.data.shard_writer`). The bytes of the output therefore do not
   depend on the number of workers.
3. Shards go to a hidden partial folder; ``manifest.json`` is written last and
   atomically (:mod:`mindxh.data.outdir`), so an interrupted run leaves no complete-looking
   dataset, and the next run cleans up after it.

Running again with the same inputs (by sha256), tokenizer, kind, seq_len and options
checks the existing shards and does nothing.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import shlex
import shutil
import sys
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import mindxh
from mindxh.data import outdir, shards
from mindxh.data.bulk_pack import BulkPacker
from mindxh.data.prepare_worker import ChunkEncoder, Encoded, encode_chunk, init_worker
from mindxh.data.readers import REASONS, PrepareError, SkipLog, check_input, read_chunks
from mindxh.data.shard_writer import ShardWriter, default_rows_per_shard
from mindxh.tokenizer.spm import Tokenizer

__all__ = ["DEFAULT_MAX_DOC_CHARS", "KINDS", "PrepareError", "prepare"]

log = logging.getLogger(__name__)

KINDS = ("pretrain", "sft")
DEFAULT_MAX_DOC_CHARS = 1_000_000
_CHUNK_BYTES = 1 << 20


def prepare(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
            tokenizer_path: str | os.PathLike[str], kind: str = "pretrain", seq_len: int = 2048,
            workers: int | None = None, strict: bool = False, rows_per_shard: int | None = None,
            max_doc_chars: int = DEFAULT_MAX_DOC_CHARS, overwrite: bool = False,
            progress: bool = True, command: str | None = None,
            start_method: str = "spawn") -> dict[str, Any]:
    """Tokenise and pack ``inputs`` into ``out``; return the manifest (see mindxh.data.shards).

    ``workers``: tokenising processes (default: the CPUs this process may use; 0 = none,
    everything in this process). ``start_method``: how they start; "spawn" (~0.7 s, hidden
    behind the MindSpore import) is safe in a process that has already started threads.
    ``strict``: the first bad record is an error ``FILE:LINE: reason`` instead of a skip.
    ``rows_per_shard``: default makes ~256 MiB shards. ``max_doc_chars``: longer pretraining
    documents are skipped as over-long (0 = no limit). ``overwrite``: replace a different
    dataset already in ``out``. Raises PrepareError for unusable input or output."""
    t0 = time.perf_counter()
    if kind not in KINDS:
        raise PrepareError(f"kind must be one of {KINDS}, got {kind!r}")
    if seq_len <= 0:
        raise PrepareError(f"seq_len must be positive, got {seq_len}")
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    if workers < 0:
        raise PrepareError(f"workers must be >= 0, got {workers}")
    rows_per_shard = default_rows_per_shard(seq_len) if rows_per_shard is None else rows_per_shard
    if rows_per_shard <= 0:
        raise PrepareError(f"rows_per_shard must be positive, got {rows_per_shard}")
    if max_doc_chars < 0:
        raise PrepareError(f"max_doc_chars must be >= 0 (0 = no limit), got {max_doc_chars}")
    paths = [Path(p) for p in inputs]
    if not paths:
        raise PrepareError("no input files given")
    for p in paths:
        check_input(p, kind)
    resolved = [p.resolve() for p in paths]
    twice = sorted({str(p) for p, r in zip(paths, resolved) if resolved.count(r) > 1})
    if twice:  # as a weight this would be invisible; data.datasets[].weight says it openly
        log.warning("input given more than once, its documents will appear that many times: %s",
                    ", ".join(twice))
    tok = _load_tokenizer(tokenizer_path)

    sources = [{"path": str(p), "sha256": shards.file_sha256(p), "bytes": p.stat().st_size} for p in paths]
    options = {"max_doc_chars": max_doc_chars, "rows_per_shard": rows_per_shard}
    spec = {"format": shards.FORMAT, "kind": kind, "seq_len": seq_len,
            "tokenizer": {"path": str(tokenizer_path), "sha256": tok.sha256, "vocab_size": tok.vocab_size}}
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrepareError(f"{out}: cannot create the output directory: {exc}") from exc
    try:
        with outdir.locked(out):
            outdir.recover(out)
            existing = _existing(out, spec, sources, options, overwrite, strict)
            if existing is not None:
                return existing
            partial = outdir.new_partial(out)
            try:
                manifest = _build(paths, partial, tok, spec, sources, options, workers, strict,
                                  progress, start_method)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            manifest.update(command=command if command is not None else shlex.join(sys.argv),
                            mindxh_version=mindxh.__version__,
                            created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
            outdir.finish(out, partial, manifest)
    except BaseException:
        if created:  # a failed first preparation leaves no empty DIR behind
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty: never what another process wrote
        raise
    dt = time.perf_counter() - t0
    log.info("prepared %s: %d documents, %s tokens (%s with loss), %d rows of %d in %d shard(s), "
             "%.1f s, %s tokens/s", out, manifest["documents"], f"{manifest['tokens']:,}",
             f"{manifest['loss_tokens']:,}", manifest["rows"], seq_len, len(manifest["shards"]),
             dt, f"{manifest['tokens'] / max(dt, 1e-9):,.0f}")
    return manifest


def _load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """What `Tokenizer.load` reads (a SentencePiece .model, or a Hugging Face tokenizer.json),
    as `mindxh train` loads `tokenizer.path`: so the manifest's sha256 is the one the trainer
    checks. Every document starts with BOS and ends with EOS, so both must exist."""
    p = Path(path)
    if p.is_dir():
        raise PrepareError(f"tokenizer {p} is a directory; name the file in it (a SentencePiece "
                           ".model, or tokenizer.json)")
    try:
        tok = Tokenizer.load(p)
    except (OSError, ValueError) as exc:
        msg = str(exc) if str(p) in str(exc) else f"tokenizer {p}: {exc}"
        if isinstance(exc, ValueError):
            msg += "; expected a SentencePiece .model, or a Hugging Face tokenizer.json"
        raise PrepareError(msg) from None
    missing = [name for name, i in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id)) if i < 0]
    if missing:
        raise PrepareError(f"tokenizer {p} has no {' or '.join(missing)}; prepared documents "
                           "start with BOS and end with EOS (for a tokenizer.json, name them in "
                           "the tokenizer_config.json beside it)")
    return tok


def _same_dataset(manifest: dict, spec: dict, sources: list[dict], options: dict) -> bool:
    return (all(manifest.get(k) == spec[k] for k in ("kind", "seq_len"))
            and manifest.get("tokenizer", {}).get("sha256") == spec["tokenizer"]["sha256"]
            and [(s.get("sha256"), s.get("bytes")) for s in manifest.get("sources", [])]
            == [(s["sha256"], s["bytes"]) for s in sources]
            and manifest.get("options") == options)


def _existing(out: Path, spec: dict, sources: list[dict], options: dict, overwrite: bool,
              strict: bool) -> dict | None:
    """The manifest if ``out`` already holds this very dataset (a no-op); None to build;
    PrepareError if ``out`` holds something else and ``overwrite`` is off."""
    if not (out / shards.MANIFEST_NAME).exists():
        stray = outdir.stray_shards(out)
        if stray and not overwrite:
            raise PrepareError(f"{out} holds shard files ({stray[0].name}, ...) but no "
                               f"{shards.MANIFEST_NAME}, and not from an interrupted `mindxh data "
                               "prepare`; pass --overwrite to replace them, or choose another --out")
        return None
    try:
        manifest = shards.load_manifest(out)
    except shards.ShardError as exc:
        if overwrite:
            return None
        raise PrepareError(f"{exc}; pass --overwrite to replace it, or choose another --out") from None
    if not _same_dataset(manifest, spec, sources, options):
        if overwrite:
            log.info("%s: replacing a different prepared dataset (--overwrite)", out)
            return None
        raise PrepareError(
            f"{out} already holds a different prepared dataset (kind {manifest.get('kind')}, seq_len "
            f"{manifest.get('seq_len')}, {len(manifest.get('sources', []))} source(s), tokenizer "
            f"{str(manifest.get('tokenizer', {}).get('sha256'))[:12]}); pass --overwrite to replace it, "
            "or choose another --out")
    if strict:
        for src in manifest.get("sources", []):
            first = sorted((lines[0], reason) for reason, lines in src.get("skipped_lines", {}).items())
            if first:
                line, reason = first[0]
                raise PrepareError(f"{src['path']}:{line}: {REASONS.get(reason, reason)} (skipped as "
                                   f"{reason} when {out} was prepared without --strict)")
    try:
        shards.verify_shards(out)
    except shards.ShardError as exc:
        log.warning("%s; preparing it again", exc)
        return None
    log.info("%s already holds this dataset (same inputs, tokenizer, kind, seq_len and options): "
             "nothing to do", out)
    return manifest


def _build(paths: list[Path], partial: Path, tok: Tokenizer, spec: dict, sources: list[dict],
           options: dict, workers: int, strict: bool, progress: bool, start_method: str) -> dict:
    """Read, tokenise, pack and write into ``partial``; the manifest (without command/time)."""
    kind, seq_len = spec["kind"], spec["seq_len"]
    skiplogs = [SkipLog(str(p)) for p in paths]
    documents = [0] * len(paths)
    packer = BulkPacker(seq_len, split=(kind == "pretrain"))
    chunks = (c for i, p in enumerate(paths) for c in read_chunks(i, p, kind, _CHUNK_BYTES))
    encoder_args = (tok, kind, seq_len, options["max_doc_chars"])
    bar = _Progress(sum(s["bytes"] for s in sources), progress)
    writer = None
    try:
        with _Encoders(encoder_args, workers, start_method) as encoders:
            writer = ShardWriter(partial, seq_len, options["rows_per_shard"],
                                 on_shard=lambda n: outdir.maybe_fault(str(n)))
            for enc in encoders.map(chunks):
                for reason, line, detail in enc.skips:
                    if strict:
                        raise PrepareError(f"{paths[enc.source]}:{line}: {detail}")
                    skiplogs[enc.source].add(reason, line)
                documents[enc.source] += int((enc.lengths >= 2).sum())
                writer.write(*packer.add(enc.tokens, enc.lengths, enc.masks))
                bar.update(enc.nbytes, writer.tokens)
        writer.write(*packer.flush())
        entries = writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        bar.close()
    skipped: Counter = Counter()
    for src, skiplog, docs in zip(sources, skiplogs, documents):
        src.update(documents=docs, skipped=dict(sorted(skiplog.counts.items())),
                   skipped_lines=dict(sorted(skiplog.lines.items())))
        skipped.update(skiplog.counts)
        if skiplog.counts:
            log.warning("%s: skipped %s", src["path"], skiplog.summary())
    if writer.rows == 0:
        raise PrepareError("no usable documents in the input" +
                           (f" (skipped: {dict(skipped)})" if skipped else ""))
    return {**spec, "documents": sum(documents), "tokens": writer.tokens,
            "loss_tokens": writer.loss_tokens, "rows": writer.rows, "shards": entries,
            "sources": sources, "skipped": dict(sorted(skipped.items())), "options": options}


class _Encoders:
    """Tokenising processes (none with ``workers=0``); :meth:`map` yields in input order,
    with at most ``2 * workers + 2`` chunks in flight."""

    def __init__(self, encoder_args: tuple, workers: int, start_method: str):
        self.args, self.workers, self.start_method = encoder_args, workers, start_method
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "_Encoders":
        if self.workers:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context(self.start_method),
                                            initializer=init_worker, initargs=(*self.args, os.getpid()))
            for _ in range(self.workers):  # start them now: they import while we import MindSpore
                self.pool.submit(int)
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def map(self, chunks: Iterable) -> Iterator[Encoded]:
        if self.pool is None:
            encoder = ChunkEncoder(*self.args)
            yield from (encoder(c) for c in chunks)
            return
        pending: deque = deque()
        for chunk in chunks:
            pending.append(self.pool.submit(encode_chunk, chunk))
            if len(pending) >= 2 * self.workers + 2:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


class _Progress:
    """A tqdm bar over input bytes on a terminal; a log line every 10 s otherwise."""

    def __init__(self, total_bytes: int, enabled: bool):
        self.total, self.done, self.enabled = max(total_bytes, 1), 0, enabled
        self.t0 = self._last = time.perf_counter()
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, desc="prepare", unit="B", unit_scale=True,
                             dynamic_ncols=True, mininterval=0.5)

    def update(self, nbytes: int, tokens: int) -> None:
        self.done += nbytes
        now = time.perf_counter()
        rate = tokens / max(now - self.t0, 1e-9)
        if self._bar is not None:
            self._bar.update(nbytes)
            self._bar.set_postfix_str(f"{rate:,.0f} tokens/s", refresh=False)
        elif self.enabled and now - self._last >= 10:
            self._last = now
            log.info("prepare: %.0f%% of the input, %s tokens, %s tokens/s",
                     100 * min(self.done / self.total, 1), f"{tokens:,}", f"{rate:,.0f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
