"""Where the trainer's batches come from: the embedded generator or prepared datasets.

Both sources hand this rank dicts of int32 [batch_size, seq_len] arrays, `MODEL_INPUTS`,
which the step cells take in that order, plus `sample_ids` (global sample numbers) that
`SampleLog` can record. Both resume exactly from their `state_dict()`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mindxh.config import Recipe
from mindxh.data.corpus import corpus_source
from mindxh.data.loader import DataError, PreparedDataset, PreparedLoader, eval_batches
from mindxh.data.stream import PackedBatcher
from mindxh.tokenizer import Tokenizer

MODEL_INPUTS = ("input_ids", "labels", "positions", "segment_ids")
SAMPLES_ENV = "MINDXH_RECORD_SAMPLES"  # "1": each rank writes OUTPUT_DIR/samples-rank<R>.jsonl


class BatchSource(Protocol):
    """What the trainer needs of a data source: this rank's batches and an exact position."""

    def next_batch(self) -> dict[str, np.ndarray]: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class SyntheticSource:
    """The embedded generator: every rank packs the same global batch and keeps its slice, so
    2 ranks x 8 rows see exactly the rows of 1 process x 16."""

    def __init__(self, recipe: Recipe, tok: Tokenizer, rank: int, split: str = "train"):
        t = recipe.train
        self.batch_size, self.rank = t.batch_size, rank
        self.global_batch = t.batch_size * recipe.parallel.data_parallel
        self.batcher = PackedBatcher(corpus_source(recipe.seed, split, recipe.data.levels,
                                                   recipe.data.tasks), tok,
                                     t.seq_len, self.global_batch)

    def next_batch(self) -> dict[str, np.ndarray]:
        start = self.batcher.batches_served * self.global_batch
        batch = self.batcher.next_batch()
        batch["sample_ids"] = start + np.arange(self.global_batch, dtype=np.int64)
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        return {name: value[mine] for name, value in batch.items()}

    def state_dict(self) -> dict[str, Any]:
        return self.batcher.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind", "synthetic") != "synthetic":
            raise DataError(f"the checkpoint's data state is {state['kind']!r}, but data.source is "
                            "synthetic: data.source changed since that checkpoint")
        self.batcher.load_state_dict(state)


def _open(path: str, key: str, recipe: Recipe, tok: Tokenizer) -> PreparedDataset:
    return PreparedDataset.open(path, key, recipe.train.seq_len, tok.sha256)


def train_source(recipe: Recipe, tok: Tokenizer, rank: int) -> BatchSource:
    """The recipe's training data for this rank; a prepared dataset is validated (manifest,
    seq_len, tokenizer, checksums) here, before any compute. Raises DataError."""
    d = recipe.data
    if d.source == "synthetic":
        return SyntheticSource(recipe, tok, rank)
    datasets = [_open(ds.path, f"data.datasets[{i}].path", recipe, tok) for i, ds in enumerate(d.datasets)]
    return PreparedLoader(datasets, [ds.weight for ds in d.datasets], recipe.seed,
                          recipe.train.batch_size, recipe.parallel.data_parallel, rank,
                          tokenizer_sha256=tok.sha256)


def heldout_batches(recipe: Recipe, tok: Tokenizer) -> list[dict[str, np.ndarray]]:
    """Global batches for the eval loss: data.eval_dataset's first rows when set, else held-out
    synthetic problems (never in the training split). Every rank evaluates all of them."""
    d = recipe.data
    global_batch = recipe.train.batch_size * recipe.parallel.data_parallel
    if d.eval_dataset is not None:
        dataset = _open(d.eval_dataset, "data.eval_dataset", recipe, tok)
        batches = eval_batches(dataset, global_batch, d.heldout_batches)
        if d.heldout_batches and not batches:
            raise DataError(f"data.eval_dataset={d.eval_dataset} has {dataset.rows} rows, fewer than "
                            f"one global batch ({global_batch}); prepare more or lower train.batch_size")
        return batches
    if d.source != "synthetic":
        return []
    batcher = SyntheticSource(recipe, tok, rank=0, split="heldout").batcher  # whole global batches
    return [batcher.next_batch() for _ in range(d.heldout_batches)]


class SampleLog:
    """Debug record of the samples each rank trained on (set MINDXH_RECORD_SAMPLES=1): one JSON
    line per micro-batch; on resume, records past the checkpoint are dropped, so the file lists
    exactly what the final weights saw."""

    def __init__(self, out: Path, rank: int, resume_step: int | None):
        self.path = out / f"samples-rank{rank}.jsonl" if os.environ.get(SAMPLES_ENV) == "1" else None
        if self.path is None:
            return
        kept = []
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def record(self, step: int, batch: dict[str, np.ndarray]) -> None:
        if self.path is None:
            return
        ids = {k: batch[k].tolist() for k in ("sample_ids", "dataset_ids", "row_ids") if k in batch}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **ids}) + "\n")
