"""Generation from an exported MindIR directory alone: manifest, graphs and tokenizer.

`mindxh export` (mindxh.export.mindir) writes

    DIR/manifest.json     what the files are: model config, shapes, sha256 of every file
    DIR/prefill.mindir    (tokens, positions, out_index) -> (logits, k_cache, v_cache)
    DIR/decode.mindir     (tokens, positions, k_cache, v_cache) -> (logits, k_cache, v_cache)
    DIR/tokenizer.model   (or tokenizer.json + tokenizer_config.json)

and this module reads them back, with no recipe and no checkpoint. The manifest's names live
here, below the exporter in the package's layers, so writer and reader cannot drift apart.
Every file's sha256 is checked before anything is loaded: a truncated or replaced graph is
then an error naming the file, not a crash inside MindSpore or silently different tokens.
The caches travel through the graphs' inputs and outputs (see models/llama/cache.py for
why), so the batch is dynamic and the host loop is the one `Generator` uses.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from mindxh.errors import MindxhError
from mindxh.generate.generator import BatchGenerator
from mindxh.tokenizer import Tokenizer
from mindxh.utils.fsio import file_sha256

__all__ = ["DECODE_FILE", "FORMAT", "FORMAT_VERSION", "MANIFEST_FILE", "PREFILL_FILE",
           "ExportedModelError", "MindirBackend", "load_generator", "load_graph", "prompt_widths",
           "read_manifest"]

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
PREFILL_FILE = "prefill.mindir"
DECODE_FILE = "decode.mindir"
FORMAT = "mindxh-mindir"
FORMAT_VERSION = 1
_REQUIRED = ("model", "max_len", "prompt_bucket", "graphs", "tokenizer", "files")


class ExportedModelError(MindxhError, ValueError):
    """An export directory that cannot be used as it is (the message names the file)."""


def read_manifest(directory: str | Path) -> dict:
    """The manifest of an export directory, after checking every file it lists (size, sha256)."""
    d = Path(directory)
    if not d.is_dir():
        raise ExportedModelError(f"{d} is not a directory (expected one written by `mindxh export`)")
    path = d / MANIFEST_FILE
    if not path.is_file():
        raise ExportedModelError(f"{path} is missing: {d} is not a complete `mindxh export` directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ExportedModelError(f"{path}: not valid JSON (corrupt; export again)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportedModelError(f"{path}: not a mindxh MindIR manifest (format {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ExportedModelError(f"{path}: format version {manifest.get('format_version')!r}; this "
                                 f"mindxh reads version {FORMAT_VERSION} (export again)")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise ExportedModelError(f"{path}: missing keys {missing}")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(isinstance(e, dict) for e in files.values()):
        raise ExportedModelError(f"{path}: 'files' must map file names to {{bytes, sha256}}")
    for name, entry in files.items():
        _verify(d / name, entry)
    _check_shapes(manifest, path)
    return manifest


def _check_shapes(manifest: dict, path: Path) -> None:
    """The manifest's sizes agree with its graphs' signatures (the cache they were exported
    with): an edited max_len would otherwise let generation run past the cache, silently."""
    graphs = manifest["graphs"]
    try:
        files = {name: graphs[name]["file"] for name in ("prefill", "decode")}
        cache_shape = graphs["decode"]["inputs"][2]["shape"]  # k_cache [L, B, KV, T, D]
        cache_len = int(cache_shape[3])
        sizes = (int(manifest["max_len"]), int(manifest["cache_len"]),
                 int(manifest["prompt_bucket"]), int(manifest["model"]["vocab_size"]))
    except (KeyError, IndexError, TypeError, ValueError):
        raise ExportedModelError(f"{path}: 'graphs' or the sizes are not as `mindxh export` writes "
                                 "them (edited?); export again") from None
    if not all(n in manifest["files"] for n in files.values()):
        raise ExportedModelError(f"{path}: the graphs {sorted(files.values())} must be among "
                                 "its checked 'files'; export again")
    if not sizes[0] - 1 == sizes[1] == cache_len or sizes[2] < 1:
        raise ExportedModelError(f"{path}: max_len={sizes[0]} and cache_len={sizes[1]} do not fit "
                                 f"the graphs' {cache_len}-column cache (edited?); export again")


def _verify(path: Path, entry: dict) -> None:
    if not path.is_file():
        raise ExportedModelError(f"{path} is missing (listed in {MANIFEST_FILE}); export again")
    size = path.stat().st_size
    if size != entry.get("bytes"):
        raise ExportedModelError(f"{path} has {size} bytes, the manifest says {entry.get('bytes')} "
                                 "(truncated or replaced; export again)")
    digest = file_sha256(path)
    if digest != entry.get("sha256"):
        raise ExportedModelError(f"{path}: sha256 {digest[:16]}... differs from the manifest's "
                                 f"{str(entry.get('sha256'))[:16]}... (corrupt or replaced; export again)")


def load_graph(path: Path):
    """A MindIR file as a callable GraphCell; a file MindSpore refuses is an error naming it."""
    import mindspore as ms
    from mindspore import nn

    try:
        return nn.GraphCell(ms.load(str(path)))
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportedModelError(f"{path}: MindSpore cannot load it: {first}") from None


class MindirBackend:
    """The exported graphs as a StepBackend: the caches are the decode graph's own outputs,
    fed back as its next inputs (MindSpore tensors, never copied to NumPy)."""

    batch_size = None  # the graphs take any batch size

    def __init__(self, prefill, decode):
        self._prefill, self._decode = prefill, decode
        self._k = self._v = None

    def prefill(self, tokens, positions, last):
        import mindspore as ms

        logits, self._k, self._v = self._prefill(ms.Tensor(tokens), ms.Tensor(positions),
                                                 ms.Tensor(last))
        return logits.asnumpy()

    def decode(self, tokens, positions):
        import mindspore as ms

        if self._k is None:
            raise RuntimeError("decode before prefill: the caches are empty")
        logits, self._k, self._v = self._decode(ms.Tensor(tokens), ms.Tensor(positions),
                                                self._k, self._v)
        return logits.asnumpy()


def load_generator(directory: str | Path, batch_size: int) -> tuple[BatchGenerator, dict]:
    """(a generator over the exported graphs, the manifest); `batch_size` prompts per chunk
    (any number: the graphs' batch is dynamic)."""
    d = Path(directory)
    manifest = read_manifest(d)
    graphs = manifest["graphs"]
    backend = MindirBackend(load_graph(d / graphs["prefill"]["file"]),
                            load_graph(d / graphs["decode"]["file"]))
    tokenizer = Tokenizer.load(d / manifest["tokenizer"])
    log.info("loaded %s (MindIR exported from %s)", d, manifest.get("source_checkpoint"))
    generator = BatchGenerator(backend, tokenizer, batch_size, int(manifest["max_len"]),
                               int(manifest["prompt_bucket"]), int(manifest["model"]["vocab_size"]))
    return generator, manifest


def prompt_widths(max_len: int, prompt_bucket: int) -> list[int]:
    """The prompt block widths the host loop uses (multiples of the bucket, capped by the cache)."""
    cache_len = max_len - 1
    return sorted({min(w, cache_len) for w in range(prompt_bucket, cache_len + prompt_bucket,
                                                    prompt_bucket)})
