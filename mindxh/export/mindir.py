"""MindIR export: the graphs generation runs, as files MindSpore Lite, serving or
`mindxh generate --mindir` load without a recipe or checkpoint.

Two graphs, both with a dynamic batch (models/llama/cache.py, PrefillStep and DecodeStep):
prefill takes the padded prompt block (its width is dynamic too) and returns the logits
after each row's last prompt token and the filled key/value caches; decode takes one token
per row and the caches, and returns the logits and the updated caches. The caches are
graph inputs and outputs, not Parameters: a Parameter's shape would fix the batch, and the
two files would each hold a private copy of it.

After writing, the files are loaded back and run teacher-forced over a probe batch (three
rows of different lengths, a few decode steps, then one row alone to exercise the dynamic
batch); their logits must match the live generation cell's (`CachedDecoder`, what
`generate --checkpoint` runs) on the same rows within `tolerance`, and a full forward
pass's within 100x that, and never less than FULL_FORWARD_FLOOR (a different order of sums:
~1e-5 apart at logits of ~15, while a cache bug is O(1)).
The manifest (format defined in mindxh.generate.mindir) is written last, so a directory
without one is an export that did not finish.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindxh import __version__
from mindxh.errors import MindxhError
from mindxh.generate.mindir import (
    DECODE_FILE,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_FILE,
    PREFILL_FILE,
    MindirBackend,
    load_graph,
    prompt_widths,
)
from mindxh.utils.fsio import atomic_write_json, file_sha256, staging_dir, swap_in

__all__ = ["ExportError", "ExportSummary", "export_checkpoint", "export_model", "signatures"]

log = logging.getLogger(__name__)


class ExportError(MindxhError, RuntimeError):
    """An export that cannot be made, or whose reloaded graphs do not reproduce the model."""


@dataclass
class ExportSummary:
    directory: Path
    manifest: Path
    files: dict[str, int]  # file name -> bytes (the manifest excluded)
    max_abs_diff: float
    timings_s: dict[str, float]

    @property
    def bytes(self) -> int:
        return sum(self.files.values())


def _tensor(name: str, shape: list, dtype: str = "int32") -> dict:
    return {"name": name, "shape": shape, "dtype": dtype}


def signatures(cfg, cache_len: int) -> dict:
    """Inputs and outputs of both graphs, in call order; None is a dynamic dimension. The
    export's input specs are built from this, so the manifest describes what was exported."""
    cache = [cfg.num_layers, None, cfg.num_kv_heads, cache_len, cfg.head_dim]
    caches = [_tensor("k_cache", cache, "float32"), _tensor("v_cache", cache, "float32")]
    outputs = [_tensor("logits", [None, cfg.vocab_size], "float32"), *caches]
    return {
        "prefill": {"file": PREFILL_FILE, "outputs": outputs, "inputs": [
            _tensor("tokens", [None, None]), _tensor("positions", [None, None]),
            _tensor("out_index", [None])]},
        "decode": {"file": DECODE_FILE, "outputs": outputs, "inputs": [
            _tensor("tokens", [None, 1]), _tensor("positions", [None, 1]), *caches]},
    }


def export_checkpoint(checkpoint: str | Path, out: str | Path, max_len: int | None = None,
                      prompt_bucket: int = 32, tolerance: float = 1e-4) -> ExportSummary:
    """Export a checkpoint (or the newest of a run directory) into `out`; `max_len` (prompt +
    completion tokens) defaults to the longest the model allows, max_seq_len + 1."""
    from mindxh.checkpoint.inference import load_for_inference

    model, tokenizer, recipe, checkpoint_dir = load_for_inference(checkpoint)
    return export_model(model, tokenizer, Path(out), max_len or recipe.model.max_seq_len + 1,
                        prompt_bucket, str(checkpoint_dir), tolerance)


def export_model(model, tokenizer, out: Path, max_len: int, prompt_bucket: int = 32,
                 source: str | None = None, tolerance: float = 1e-4) -> ExportSummary:
    """Write prefill/decode MindIR, the tokenizer and the manifest into `out`, checked."""
    cfg = model.cfg
    if not 2 <= max_len <= cfg.max_seq_len + 1:
        raise ExportError(f"max_len={max_len} must be in 2..{cfg.max_seq_len + 1} (the model's "
                          f"max_seq_len={cfg.max_seq_len} + 1)")
    if prompt_bucket < 1:
        raise ExportError(f"prompt_bucket must be >= 1, got {prompt_bucket}")
    if not 0 <= tolerance < float("inf"):
        raise ExportError(f"tolerance must be a finite number >= 0, got {tolerance}")
    final = out
    out = _staging_dir(final)  # filled and checked here, then swapped in: a failed export
    try:                       # leaves `final` (a previous export, or nothing) untouched
        summary = _export_into(model, tokenizer, out, max_len, prompt_bucket, source, tolerance,
                               final)
        swap_in(out, final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    sizes = summary.files
    log.info("exported %s: %s; reloaded logits within %.2g of the live model; export %.1fs + "
             "%.1fs, check %.1fs", final, ", ".join(f"{n} {b / 1e6:.2f} MB" for n, b in sizes.items()),
             summary.max_abs_diff, summary.timings_s["prefill_export"],
             summary.timings_s["decode_export"], summary.timings_s["verify"])
    return dataclasses.replace(summary, directory=final, manifest=final / MANIFEST_FILE)


_EXPORT_FILES = {PREFILL_FILE, DECODE_FILE, MANIFEST_FILE, "tokenizer.model", "tokenizer.json",
                 "tokenizer_config.json"}


def _staging_dir(out: Path) -> Path:
    """A hidden sibling of `out` to export into. `out` must be absent, empty, or an earlier
    export (an export's files only, graphs or manifest among them): anything else would be
    overwritten or mixed with graphs."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; the export needs a directory")
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    foreign = sorted(names - _EXPORT_FILES)
    if foreign or names and not names & {MANIFEST_FILE, PREFILL_FILE, DECODE_FILE}:
        shown = ", ".join((foreign or sorted(names))[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ExportError(f"{out} is not empty and not an earlier export ({shown}); choose "
                          "another --out")
    return staging_dir(out)


FULL_FORWARD_FLOOR = 1e-2  # the cached graphs against a full forward pass: rounding only


def _export_into(model, tokenizer, out: Path, max_len: int, prompt_bucket: int,
                 source: str | None, tolerance: float, final: Path) -> ExportSummary:
    """Export into the staging folder `out`; errors name `final`, the folder asked for."""
    import mindspore as ms

    from mindxh.models.llama.cache import DecodeStep, PrefillStep

    cfg = model.cfg
    model.set_train(False)
    cache_len = max_len - 1
    sigs = signatures(cfg, cache_len)
    timings = {}
    for name, cell in (("prefill", PrefillStep(model, cache_len)), ("decode", DecodeStep(model, cache_len))):
        t0 = time.perf_counter()
        specs = [ms.Tensor(shape=t["shape"], dtype=getattr(ms, t["dtype"])) for t in sigs[name]["inputs"]]
        path = out / sigs[name]["file"]
        path.unlink(missing_ok=True)  # mindspore writes graphs read-only (0400)
        ms.export(cell, *specs, file_name=str(path.with_suffix("")), file_format="MINDIR")
        if not path.is_file():
            raise ExportError(f"mindspore.export wrote no {path}")
        timings[f"{name}_export"] = round(time.perf_counter() - t0, 3)
    tokenizer_files = _copy_tokenizer(tokenizer, out)
    t0 = time.perf_counter()
    diff, diff_full = _check(model, out, cache_len, prompt_bucket)
    timings["verify"] = round(time.perf_counter() - t0, 3)
    if not diff <= tolerance:
        raise ExportError(f"{final}: the reloaded graphs' logits differ from the live model's by "
                          f"{diff:.3g} (tolerance {tolerance:g}); nothing was written there")
    allowed = max(100 * tolerance, FULL_FORWARD_FLOOR)
    if not diff_full <= allowed:
        raise ExportError(f"{final}: the cached graphs' logits differ from a full forward pass by "
                          f"{diff_full:.3g} (allowed: {allowed:g}); the cache logic is wrong")
    names = [PREFILL_FILE, DECODE_FILE, *tokenizer_files]
    files = {n: {"bytes": (out / n).stat().st_size, "sha256": file_sha256(out / n)} for n in names}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "mindxh_version": __version__, "mindspore_version": ms.__version__,
        "source_checkpoint": source,
        "model": dataclasses.asdict(cfg),
        "vocab_size": cfg.vocab_size,
        "max_len": max_len, "cache_len": cache_len,
        "prompt_bucket": prompt_bucket, "prompt_widths": prompt_widths(max_len, prompt_bucket),
        "tokenizer": tokenizer_files[0],
        "stop_ids": {"eos": tokenizer.eos_id, "answer_end": tokenizer.answer_end_id},  # or None
        "cache_layout": "[layers, batch, kv_heads, cache_len, head_dim]; column j holds the "
                        "keys/values of position j; a token at position p sees columns <= p",
        "graphs": sigs,
        "max_abs_diff": diff, "tolerance": tolerance, "max_abs_diff_full_forward": diff_full,
        "timings_s": timings,
        "files": files,
    }
    manifest_path = atomic_write_json(out / MANIFEST_FILE, manifest)
    sizes = {n: f["bytes"] for n, f in files.items()}
    log.debug("full-forward check of the export: within %.2g", diff_full)
    return ExportSummary(out, manifest_path, sizes, diff, timings)


def _copy_tokenizer(tokenizer, out: Path) -> list[str]:
    """Copy the tokenizer file (and a tokenizer.json's tokenizer_config.json) into `out`;
    returns the names, the tokenizer itself first."""
    source = Path(tokenizer.path) if getattr(tokenizer, "path", None) else None
    if source is None or not source.is_file():
        raise ExportError(f"the tokenizer has no file to copy (path {source})")
    name = "tokenizer.json" if source.suffix == ".json" else "tokenizer.model"
    if source.resolve() != (out / name).resolve():
        shutil.copyfile(source, out / name)
    names = [name]
    config = source.parent / "tokenizer_config.json"
    if name == "tokenizer.json" and config.is_file():
        if config.resolve() != (out / config.name).resolve():
            shutil.copyfile(config, out / config.name)
        names.append(config.name)
    return names


def _check(model, out: Path, cache_len: int, prompt_bucket: int) -> tuple[float, float]:
    """Largest |logit difference| of the reloaded graphs (1) from the live generation cell
    on the same three rows, (2) from the model's full forward pass, on those rows and on one
    of them replayed alone. The probe is teacher-forced: prefill of rows of different lengths,
    then a few decode steps. (1) is export fidelity: the same computation, exactly 0 on CPU.
    (2) checks the cache logic and the dynamic batch against a different computation: ~1e-5
    from reordered sums (at batch 1 the kernels also split the work differently), while a
    wrong mask, position or row gives O(1)."""
    import mindspore as ms

    from mindxh.models.llama.cache import CachedDecoder

    backend = MindirBackend(load_graph(out / PREFILL_FILE), load_graph(out / DECODE_FILE))
    steps = min(3, cache_len - 1)
    width = max(1, min(prompt_bucket, cache_len - steps))
    lengths = np.array([width, max(1, width // 2), 1], np.int32)
    rows = np.arange(len(lengths))
    live = CachedDecoder(model, len(rows), cache_len)
    seqs = np.random.default_rng(0).integers(0, model.cfg.vocab_size, (len(rows), width + steps))
    seqs = seqs.astype(np.int32)
    full = model(ms.Tensor(seqs)).asnumpy()  # [rows, width + steps, V]
    block = np.where(np.arange(width) < lengths[:, None], seqs[:, :width], 0).astype(np.int32)
    positions = np.tile(np.arange(width, dtype=np.int32), (len(rows), 1))
    got = backend.prefill(block, positions, lengths - 1)
    want = live(ms.Tensor(block), ms.Tensor(positions), ms.Tensor(lengths - 1)).asnumpy()
    pairs = [(got, want, full[rows, lengths - 1])]
    zeros = ms.Tensor(np.zeros(len(rows), np.int32))
    for step in range(steps):
        pos = lengths + step
        tokens = seqs[rows, pos][:, None]
        got = backend.decode(tokens, pos[:, None])
        want = live(ms.Tensor(tokens), ms.Tensor(pos[:, None]), zeros).asnumpy()
        pairs.append((got, want, full[rows, pos]))
    # row 1 again, alone: the same logits at another batch size, prefill and decode
    got = [backend.prefill(block[1:2], positions[1:2], lengths[1:2] - 1)]
    for step in range(steps):
        pos = lengths[1:2] + step
        got.append(backend.decode(seqs[1:2, pos], pos[:, None]))
    alone = [(g, f[1:2]) for g, (_, _, f) in zip(got, pairs)]
    to_live = max(float(np.abs(g - w).max()) for g, w, _ in pairs)
    to_full = max(float(np.abs(g - f).max()) for g, f in [(g, f) for g, _, f in pairs] + alone)
    return to_live, to_full
