"""Training batches from prepared datasets (``mindxh data prepare`` output), resumable exactly.

The order is a pure function of one integer, the global sample number ``g`` (0, 1, 2...
over the whole run, all data-parallel ranks together):

1. the mixture (:class:`mindxh.data.mixture.Mixture`) maps ``g`` to a dataset ``i`` and
   that dataset's own sample number ``j``;
2. ``j`` falls in epoch ``j // rows_i`` of dataset ``i``; each epoch visits every row once,
   in a permutation seeded by ``(seed, i, epoch)``, a fresh one per epoch;
3. a global batch is ``batch_size * data_parallel`` consecutive samples; rank ``r`` takes
   its ``batch_size`` slice, so the ranks' rows are disjoint and together are exactly the
   rows one process with the whole global batch would see.

So the loader's whole state is the next unserved ``g`` (saved in checkpoints); a run
resumed there neither repeats nor skips a sample, whatever the data-parallel degree.
Rows are read with MindSpore's ``MindDataset`` and an explicit ``SubsetSampler``, a chunk
of batches at a time, and checked against their stored ``row_id``.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mindxh.data.mixture import Mixture
from mindxh.data.packing import positions_from_segments
from mindxh.data.shards import ShardError, load_manifest, shard_paths, verify_shards
from mindxh.errors import MindxhError

__all__ = ["DataError", "PreparedDataset", "PreparedLoader", "eval_batches"]

log = logging.getLogger(__name__)

_STATE_VERSION = 1
_COLUMNS = ["row_id", "input_ids", "labels", "segment_ids"]


class DataError(MindxhError, ValueError):
    """A prepared dataset that this run cannot use; the message names the recipe key and path."""


@dataclass
class PreparedDataset:
    """One validated prepared dataset: its manifest and shard files in row order."""

    path: Path
    manifest: dict[str, Any]
    files: list[str]

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def fingerprint(self) -> str:
        """Identifies the content (the shards' sha256), not the directory it sits in."""
        h = hashlib.sha256()
        for shard in self.manifest["shards"]:
            h.update(f"{shard['sha256']}:{shard['rows']};".encode())
        return h.hexdigest()

    @classmethod
    def open(cls, path: str | Path, key: str, seq_len: int, tokenizer_sha256: str,
             verify: bool = True) -> "PreparedDataset":
        """Refuse, before any compute, a dataset that is missing, damaged, packed for another
        `train.seq_len` or tokenised with another tokenizer. `key` is the recipe key naming it."""
        path = Path(path)
        try:
            manifest = verify_shards(path) if verify else load_manifest(path)
        except ShardError as exc:
            raise DataError(f"{key}={path}: {exc}") from None
        if int(manifest["seq_len"]) != seq_len:
            raise DataError(f"{key}={path} was prepared with seq_len={manifest['seq_len']}, but "
                            f"train.seq_len={seq_len}; set train.seq_len={manifest['seq_len']} or "
                            "prepare the data again with this seq_len")
        theirs = manifest["tokenizer"].get("sha256")
        if theirs != tokenizer_sha256:
            raise DataError(f"{key}={path} was tokenised with another tokenizer (sha256 "
                            f"{str(theirs)[:12]}..., {manifest['tokenizer'].get('path')}) than "
                            f"this run's tokenizer.path (sha256 {tokenizer_sha256[:12]}...); "
                            "use the same tokenizer for preparing and training")
        if int(manifest["rows"]) <= 0:
            raise DataError(f"{key}={path} holds no rows")
        return cls(path, manifest, [str(p) for p in shard_paths(path, manifest)])

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The given global rows, in the given order (repeats allowed), as int arrays [n, S]."""
        import mindspore.dataset as ds

        rows = np.asarray(rows, np.int64)
        unique, inverse = np.unique(rows, return_inverse=True)  # sorted: sequential reads
        # open only the shards holding these rows (each costs ~1 ms), indices relative to them
        first = np.asarray([s["first_row"] for s in self.manifest["shards"]], np.int64)
        counts = np.asarray([s["rows"] for s in self.manifest["shards"]], np.int64)
        shard = np.searchsorted(first, unique, side="right") - 1
        used = np.unique(shard)
        offset = np.zeros(len(first), np.int64)
        offset[used] = np.concatenate([[0], np.cumsum(counts[used])[:-1]])
        local = unique - first[shard] + offset[shard]
        data = ds.MindDataset([self.files[k] for k in used], columns_list=_COLUMNS,
                              num_parallel_workers=1, sampler=ds.SubsetSampler(local.tolist()))
        cols: dict[str, list[np.ndarray]] = {c: [] for c in _COLUMNS}
        for item in data.create_tuple_iterator(num_epochs=1, output_numpy=True):
            for name, value in zip(_COLUMNS, item):
                cols[name].append(value)
        got = np.asarray(cols.pop("row_id"), np.int64).reshape(-1)
        if not np.array_equal(got, unique):
            raise DataError(f"{self.path}: asked MindDataset for rows {unique[:4].tolist()}... but "
                            f"got row_id {got[:4].tolist()}...; the shards do not match the manifest")
        return {name: np.stack(arrays).astype(np.int32, copy=False)[inverse]
                for name, arrays in cols.items()}


def _batch(arrays: dict[str, np.ndarray], **ids: np.ndarray) -> dict[str, np.ndarray]:
    """Rows -> what the loss cell takes (input_ids, labels, positions, segment_ids) + ids."""
    return {"input_ids": arrays["input_ids"], "labels": arrays["labels"],
            "positions": positions_from_segments(arrays["segment_ids"]),
            "segment_ids": arrays["segment_ids"], **ids}


class PreparedLoader:
    """This rank's batches of a weighted mixture of prepared datasets (see the module doc)."""

    def __init__(self, datasets: Sequence[PreparedDataset], weights: Sequence[float], seed: int,
                 batch_size: int, data_parallel: int = 1, rank: int = 0, chunk_batches: int = 32,
                 tokenizer_sha256: str = ""):
        if not datasets or len(datasets) != len(weights):
            raise ValueError("need one weight per dataset, and at least one dataset")
        if not 0 <= rank < data_parallel or batch_size <= 0 or chunk_batches <= 0:
            raise ValueError(f"bad layout: rank {rank} of {data_parallel}, batch_size {batch_size}")
        self.datasets = list(datasets)
        self.mixture = Mixture(weights)
        self.seed = seed
        self.batch_size = batch_size
        self.global_batch = batch_size * data_parallel
        self.rank = rank
        self.chunk_batches = chunk_batches
        self.tokenizer_sha256 = tokenizer_sha256
        self.position = 0  # global sample number of the next batch's first sample
        self._ready: list[dict[str, np.ndarray]] = []
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    # -- order ----------------------------------------------------------------
    def _permutation(self, dataset: int, epoch: int) -> np.ndarray:
        key = (dataset, epoch)
        if key not in self._perms:
            for old in [k for k in self._perms if k[0] == dataset and k[1] < epoch - 1]:
                del self._perms[old]  # one epoch back is kept for a chunk that straddles two
            rng = np.random.default_rng([self.seed % (1 << 63), dataset, epoch])
            self._perms[key] = rng.permutation(self.datasets[dataset].rows)
        return self._perms[key]

    def locate(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global sample numbers -> (dataset index, row of that dataset)."""
        dataset, within = self.mixture.locate(samples)
        rows = np.empty_like(within)
        for i in np.unique(dataset):
            sel = dataset == i
            epoch, pos = np.divmod(within[sel], self.datasets[i].rows)
            out = np.empty_like(pos)
            for e in np.unique(epoch):
                at = epoch == e
                out[at] = self._permutation(int(i), int(e))[pos[at]]
            rows[sel] = out
        return dataset, rows

    def local_samples(self, position: int, batches: int) -> np.ndarray:
        """[batches, batch_size] global sample numbers this rank serves from `position` on."""
        starts = position + self.global_batch * np.arange(batches, dtype=np.int64)
        offsets = self.rank * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        return starts[:, None] + offsets[None, :]

    # -- reading --------------------------------------------------------------
    def _fill(self) -> None:
        """Read the next `chunk_batches` batches of this rank with one pass per dataset."""
        samples = self.local_samples(self.position, self.chunk_batches)
        flat = samples.reshape(-1)
        dataset, rows = self.locate(flat)
        arrays: dict[str, np.ndarray] = {}
        for i in np.unique(dataset):
            sel = dataset == i
            part = self.datasets[i].read(rows[sel])
            for name, value in part.items():
                if name not in arrays:
                    arrays[name] = np.empty((flat.size,) + value.shape[1:], value.dtype)
                arrays[name][sel] = value
        b = self.batch_size
        for k in range(self.chunk_batches):
            cut = slice(k * b, (k + 1) * b)
            self._ready.append(_batch({n: a[cut] for n, a in arrays.items()}, sample_ids=flat[cut],
                                      dataset_ids=dataset[cut], row_ids=rows[cut]))

    def next_batch(self) -> dict[str, np.ndarray]:
        """This rank's next [batch_size, seq_len] batch; the position moves by a global batch."""
        if not self._ready:
            self._fill()
        self.position += self.global_batch
        return self._ready.pop(0)

    # -- resume ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable: the position, plus what must not change for it to mean the same."""
        return {"version": _STATE_VERSION, "kind": "prepared", "position": self.position,
                "seed": self.seed, "weights": self.mixture.weights,
                "tokenizer_sha256": self.tokenizer_sha256,
                "datasets": [{"path": str(d.path), "rows": d.rows, "fingerprint": d.fingerprint}
                             for d in self.datasets]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at the saved position; refuse a state whose order would differ."""
        if state.get("kind") != "prepared" or state.get("version") != _STATE_VERSION:
            raise DataError(f"the checkpoint's data state is {state.get('kind', 'synthetic')!r} "
                            f"(version {state.get('version')}), not prepared-dataset version "
                            f"{_STATE_VERSION}: data.source changed since that checkpoint")
        mine = self.state_dict()
        for what, get in (("seed", lambda st: st["seed"]),
                          ("data.datasets weights", lambda st: st["weights"]),
                          ("data.datasets (rows or content; moving a dataset is fine)",
                           lambda st: [(d["rows"], d["fingerprint"]) for d in st["datasets"]])):
            if get(state) != get(mine):
                raise DataError(f"resuming with a different {what} than the checkpoint's would "
                                f"repeat or skip samples: checkpoint {get(state)!r}, recipe "
                                f"{get(mine)!r}")
        self.position = int(state["position"])
        self._ready = []
        log.debug("prepared loader resumed at global sample %d", self.position)


def eval_batches(dataset: PreparedDataset, global_batch: int, batches: int) -> list[dict[str, np.ndarray]]:
    """The first `batches` global batches of a held-out dataset, in row order (fewer if it is
    smaller; an empty list when it holds less than one batch)."""
    n = min(batches, dataset.rows // global_batch)
    if n == 0:
        return []
    rows = np.arange(n * global_batch, dtype=np.int64)
    arrays = dataset.read(rows)
    return [_batch({k: v[i * global_batch:(i + 1) * global_batch] for k, v in arrays.items()},
                   sample_ids=rows[i * global_batch:(i + 1) * global_batch])
            for i in range(n)]
