"""Is the prepared-data loader fast enough to never starve training? Training tokens/s vs loader tokens/s.

    python tools/bench_loader.py [RECIPE] [--rows 30000] [--data DIR] [--steps 4] [--set key=value ...]

1. Writes a prepared dataset (mindxh-packed-v1, random token documents packed at the recipe's
   train.seq_len) of `--rows` rows into a temporary directory, or uses `--data DIR`.
2. Loader: a `PreparedLoader` over it, split 3:1 into a two-dataset mixture like a real run,
   shuffled per epoch, with the recipe's batch_size; tokens/s delivered as numpy batches.
3. Training: the recipe's model in graph mode, the train step fed by that loader; tokens/s over
   `--steps` steps after the compiling first one (one micro-batch per step, as bench_train_step).
The goal is a ratio of at least 10x: the loader then costs under a tenth of a step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "small" / "pretrain.yaml"
SHA = "0" * 64  # the benchmark's stand-in tokenizer


def write_dataset(out: Path, rows: int, seq_len: int, vocab: int, seed: int = 0,
                  shard_rows: int = 8192) -> Path:
    """Random documents (2..seq_len tokens) packed into `rows` rows, in the prepared format."""
    from mindspore.mindrecord import FileWriter

    from mindxh.data import shards

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    entries, first = [], 0
    while first < rows:
        n = min(shard_rows, rows - first)
        name = shards.shard_name(len(entries))
        ids = rng.integers(3, vocab, size=(n, seq_len), dtype=np.int32)
        starts = rng.random((n, seq_len)) < 1.0 / 200  # documents of ~200 tokens on average
        starts[:, 0] = True
        segments = np.cumsum(starts, axis=1, dtype=np.int32)
        labels = np.where(np.roll(starts, -1, axis=1), -100, np.roll(ids, -1, axis=1)).astype(np.int32)
        labels[:, -1] = rng.integers(3, vocab, size=n)
        writer = FileWriter(str(out / name), shard_num=1, overwrite=True)
        writer.add_schema(shards.SCHEMA, shards.SCHEMA_DESC)
        writer.write_raw_data([{"row_id": first + k, "input_ids": ids[k], "labels": labels[k],
                                "segment_ids": segments[k]} for k in range(n)])
        writer.commit()
        entries.append({"file": name, "rows": n, "first_row": first,
                        "sha256": shards.file_sha256(out / name),
                        "db_sha256": shards.file_sha256(out / shards.db_name(name))})
        first += n
    manifest = {"format": shards.FORMAT, "kind": "pretrain", "seq_len": seq_len,
                "tokenizer": {"path": "bench", "sha256": SHA, "vocab_size": vocab},
                "documents": int(first * seq_len / 200), "tokens": first * seq_len,
                "loss_tokens": first * seq_len, "rows": first, "shards": entries}
    (out / shards.MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    return out


def make_loader(data: Path, seq_len: int, batch: int, seed: int):
    from mindxh.data.loader import PreparedDataset, PreparedLoader

    ds = PreparedDataset.open(data, "--data", seq_len, SHA)
    # the same rows twice, weighted 3:1, so the mixture path is measured as well
    return PreparedLoader([ds, ds], [3.0, 1.0], seed, batch)


def bench_loader(data: Path, seq_len: int, batch: int, batches: int) -> dict:
    t0 = time.perf_counter()
    loader = make_loader(data, seq_len, batch, seed=1)
    open_s = time.perf_counter() - t0  # manifest + sha256 of every shard
    loader.next_batch()  # first chunk: MindSpore's dataset machinery warms up
    t0 = time.perf_counter()
    for _ in range(batches):
        loader.next_batch()
    dt = time.perf_counter() - t0
    return {"open_s": open_s, "batches": batches, "tokens_per_s": batches * batch * seq_len / dt}


def bench_training(args, data: Path, recipe) -> dict:
    import mindspore as ms

    from mindxh.models.accounting import count_parameters
    from mindxh.models.llama.model import LossCell, build_model
    from mindxh.train import runtime
    from mindxh.train.batches import MODEL_INPUTS
    from mindxh.train.optim import AdamW
    from mindxh.train.step import TrainStep

    r = recipe
    runtime.configure(r)
    model = build_model(r.model, r.seed)
    step = TrainStep(LossCell(model), AdamW(model.trainable_params(), r.optim, r.train.max_steps))
    loader = make_loader(data, r.train.seq_len, r.train.batch_size, seed=2)

    def one() -> float:
        batch = loader.next_batch()
        t0 = time.perf_counter()
        loss = step(*[ms.Tensor(batch[k]) for k in MODEL_INPUTS])[0]
        float(loss.asnumpy())
        return time.perf_counter() - t0

    first = one()
    times = [one() for _ in range(args.steps)]
    med = statistics.median(times)
    return {"first_s": first, "median_s": med, "steps": args.steps,
            "tokens_per_s": r.train.batch_size * r.train.seq_len / med,
            "params": count_parameters(model)["total"]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", nargs="?", default=str(DEFAULT_RECIPE))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--rows", type=int, default=30000, help="rows of the generated dataset")
    p.add_argument("--data", help="an existing benchmark dataset (written by an earlier run)")
    p.add_argument("--keep", help="write the generated dataset here and keep it")
    p.add_argument("--loader-batches", type=int, default=2000, help="batches timed in the loader")
    p.add_argument("--steps", type=int, default=4, help="timed train steps after the first")
    p.add_argument("--vocab", type=int, default=1024, help="vocabulary when model.vocab_size is null")
    args = p.parse_args(argv)

    from mindxh.config import RecipeError, load_recipe
    try:
        r = load_recipe(args.recipe, args.set)
    except (RecipeError, OSError) as exc:
        sys.exit(f"error: {exc}")
    r.compile.mode, r.parallel.data_parallel = "graph", 1
    r.model.vocab_size = r.model.vocab_size or args.vocab
    s, b = r.train.seq_len, r.train.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data or args.keep or Path(tmp) / "data")
        if not args.data:
            t0 = time.perf_counter()
            write_dataset(data, args.rows, s, r.model.vocab_size)
            print(f"wrote {args.rows:,} rows x {s} tokens to {data} in {time.perf_counter() - t0:.1f}s")
        lo = bench_loader(data, s, b, args.loader_batches)
        tr = bench_training(args, data, r)
    print(f"{Path(args.recipe).name}: {tr['params']:,} parameters, batch {b} x seq {s}, graph mode, fp32")
    print(f"loader   : {lo['tokens_per_s']:>12,.0f} tokens/s  ({lo['batches']} batches, shuffled 3:1 "
          f"mixture; opening + checksums {lo['open_s']:.2f}s)")
    print(f"training : {tr['tokens_per_s']:>12,.0f} tokens/s  (median of {tr['steps']} steps of "
          f"{tr['median_s'] * 1e3:.0f} ms after a {tr['first_s']:.1f}s first step)")
    ratio = lo["tokens_per_s"] / tr["tokens_per_s"]
    print(f"loader / training: {ratio:.1f}x ({'meets' if ratio >= 10 else 'BELOW'} the 10x goal)")


if __name__ == "__main__":
    main()
