"""Prepared-dataset loader: order from the seed, epochs, mixtures, data-parallel split, exact
resume (in the loader and end to end through the trainer), and refusals before compute."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import TINY, run_cli
from prepared_data import random_rows, write_prepared

from mindxh.data import shards
from mindxh.data.loader import DataError, PreparedDataset, PreparedLoader
from mindxh.data.mixture import Mixture, integer_weights

SEQ = 16
SHA = "a" * 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three small datasets: 50 rows (4 shards), 7 rows, 30 rows."""
    root = tmp_path_factory.mktemp("prepared")
    return {name: write_prepared(root / name, random_rows(n, SEQ, 200, seed), SEQ, SHA, shard_rows=16)
            for name, n, seed in (("big", 50, 1), ("small", 7, 2), ("mid", 30, 3))}


def opened(data, *names):
    return [PreparedDataset.open(data[n], f"data.datasets[{i}].path", SEQ, SHA) for i, n in enumerate(names)]


def loader(data, names=("big",), weights=None, seed=0, batch=4, dp=1, rank=0, chunk=3):
    return PreparedLoader(opened(data, *names), weights or [1.0] * len(names), seed, batch, dp, rank,
                          chunk_batches=chunk)


def served(ld, batches):
    """(dataset, row) of every sample served, after checking each row's content is that row's."""
    got = [ld.next_batch() for _ in range(batches)]
    assert all(b["input_ids"].shape == (ld.batch_size, SEQ) and b["input_ids"].dtype == np.int32
               for b in got)
    ds, rows, ids = (np.concatenate([b[k] for b in got]) for k in ("dataset_ids", "row_ids", "input_ids"))
    for i in np.unique(ds):
        assert np.array_equal(ids[ds == i], ld.datasets[i].read(rows[ds == i])["input_ids"])
    return list(zip(ds.tolist(), rows.tolist()))


def test_rows_come_back_with_their_positions_and_segments(data):
    ds = opened(data, "big")[0]
    got = ds.read(np.array([17, 3, 17, 49]))
    assert got["input_ids"].shape == (4, SEQ) and np.array_equal(got["input_ids"][0], got["input_ids"][2])
    b = loader(data).next_batch()
    assert set(b) >= {"input_ids", "labels", "positions", "segment_ids", "sample_ids"}
    seg, pos = b["segment_ids"][0], b["positions"][0]
    assert pos[0] == 0 and all(pos[i] == (pos[i - 1] + 1 if seg[i] == seg[i - 1] else 0)
                               for i in range(1, SEQ))


def test_order_is_deterministic_from_the_seed(data):
    a, b = served(loader(data, seed=7), 6), served(loader(data, seed=7), 6)
    assert a == b
    assert a != served(loader(data, seed=8), 6)
    assert [r for _, r in a] != sorted(r for _, r in a)  # shuffled, not file order


def test_every_epoch_is_a_fresh_permutation(data):
    rows = [r for _, r in served(loader(data, ["small"], batch=7, chunk=2), 3)]
    epochs = [rows[0:7], rows[7:14], rows[14:21]]
    assert all(sorted(e) == list(range(7)) for e in epochs)  # each row once per epoch
    assert len({tuple(e) for e in epochs}) == 3  # a new order every epoch


def test_mixture_weights_are_respected_and_deterministic(data):
    names = ("big", "small", "mid")
    a = served(loader(data, names, [0.5, 0.2, 0.3], batch=10, chunk=7), 20)
    assert a == served(loader(data, names, [0.5, 0.2, 0.3], batch=10, chunk=4), 20)
    counts = Counter(d for d, _ in a)
    assert [counts[i] for i in range(3)] == [100, 40, 60]  # exact over whole periods
    # and within any window the share is off by less than one sample per dataset
    mix = Mixture([3, 1, 2])
    ds, _ = mix.locate(np.arange(1000))
    for n in (1, 5, 17, 100, 999):
        for i, w in enumerate([3, 1, 2]):
            assert abs((ds[:n] == i).sum() - n * w / 6) < 1


def test_integer_weights():
    assert integer_weights([3, 1]) == [3, 1]
    assert integer_weights([0.7, 0.3]) == [7, 3]
    assert integer_weights([2.0, 2.0]) == [1, 1]
    third = integer_weights([1 / 3, 2 / 3])
    assert sum(third) <= 10_000 and third[1] == 2 * third[0]
    with pytest.raises(ValueError):
        integer_weights([1, 0])


def test_mixture_locate_counts_each_dataset_in_order():
    mix = Mixture([0.25, 0.5, 0.25])
    ds, within = mix.locate(np.arange(400))
    for i in range(3):
        assert within[ds == i].tolist() == list(range((ds == i).sum()))  # 0, 1, 2... no gaps


def test_two_ranks_split_the_global_batch(data):
    names, w = ("big", "small"), [2.0, 1.0]
    one = loader(data, names, w, batch=8)
    ranks = [loader(data, names, w, batch=4, dp=2, rank=r) for r in (0, 1)]
    for _ in range(5):
        whole = one.next_batch()
        parts = [ld.next_batch() for ld in ranks]
        assert not set(parts[0]["sample_ids"].tolist()) & set(parts[1]["sample_ids"].tolist())
        for key in ("sample_ids", "row_ids", "dataset_ids", "input_ids", "segment_ids"):
            assert np.array_equal(np.concatenate([p[key] for p in parts]), whole[key])


@pytest.mark.parametrize("dp", [1, 2])
def test_loader_resume_neither_repeats_nor_skips(data, dp):
    names, w = ("big", "small", "mid"), [1.0, 1.0, 2.0]

    def make(rank):
        return loader(data, names, w, batch=3, dp=dp, rank=rank, chunk=4)

    for rank in range(dp):
        want = served(make(rank), 13)
        first = make(rank)
        got = served(first, 5)  # stops mid-chunk: read-ahead rows must not count as served
        state = json.loads(json.dumps(first.state_dict()))
        again = make(rank)
        again.load_state_dict(state)
        got += served(again, 8)
        assert got == want
    # the position is in samples, so a checkpoint made on 2 ranks resumes on 1 and vice versa
    two = [make(r) for r in range(dp)]
    for ld in two:
        served(ld, 2)
    one = loader(data, names, w, batch=3 * dp, dp=1)
    one.load_state_dict(two[0].state_dict())
    ref = loader(data, names, w, batch=3 * dp, dp=1)
    served(ref, 2)
    assert served(one, 3) == served(ref, 3)


def test_resume_refuses_other_data(data, tmp_path):
    state = loader(data, ("big", "small"), [1, 1]).state_dict()
    moved = dict(data, small=tmp_path / "moved")
    shutil.copytree(data["small"], moved["small"])
    loader(moved, ("big", "small"), [1, 1]).load_state_dict(state)  # same content elsewhere: fine
    with pytest.raises(DataError, match="weights"):
        loader(data, ("big", "small"), [2, 1]).load_state_dict(state)
    with pytest.raises(DataError, match="data.datasets"):
        loader(data, ("big", "mid"), [1, 1]).load_state_dict(state)
    with pytest.raises(DataError, match="seed"):
        loader(data, ("big", "small"), [1, 1], seed=3).load_state_dict(state)
    with pytest.raises(DataError, match="synthetic"):
        loader(data).load_state_dict({"version": 2, "next_document_index": 5})


def test_damaged_shard_is_named(tmp_path):
    d = write_prepared(tmp_path / "d", random_rows(40, SEQ, 200), SEQ, SHA, shard_rows=16)
    shard = d / shards.shard_name(1)
    raw = bytearray(shard.read_bytes())
    raw[-100] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError) as exc:
        PreparedDataset.open(d, "data.datasets[0].path", SEQ, SHA)
    assert str(shard) in str(exc.value) and "checksum" in str(exc.value)
    assert "data.datasets[0].path" in str(exc.value)


def test_mismatches_are_refused_with_the_key_and_path(data, tmp_path):
    with pytest.raises(DataError) as exc:
        PreparedDataset.open(data["big"], "data.datasets[0].path", SEQ * 2, SHA)
    assert "train.seq_len=32" in str(exc.value) and str(data["big"]) in str(exc.value)
    with pytest.raises(DataError) as exc:
        PreparedDataset.open(data["big"], "data.eval_dataset", SEQ, "b" * 64)
    assert "tokenizer" in str(exc.value) and "data.eval_dataset" in str(exc.value)
    with pytest.raises(DataError, match="no manifest.json|has no manifest"):
        PreparedDataset.open(tmp_path, "data.datasets[0].path", SEQ, SHA)


# -- the packed path of the model -------------------------------------------------------

PACKED_SCRIPT = r"""
import json, numpy as np, mindspore as ms
from mindxh.config.schema import ModelConfig
from mindxh.data.packing import IGNORE
from mindxh.models.llama.model import Decoder, LossCell
from mindxh.data.packing import Packer, stack_rows
ms.set_device("CPU"); ms.set_context(mode=ms.GRAPH_MODE)
cfg = ModelConfig(vocab_size=61, hidden_size=32, num_heads=4, num_kv_heads=2, intermediate_size=48,
                  num_layers=2, max_seq_len=32)
loss = LossCell(Decoder(cfg, seed=3))
rng = np.random.default_rng(0)
docs = [rng.integers(3, 61, size=n) for n in (7, 5, 9, 12, 4)]
packer = Packer(20, split=False)  # whole documents: row 0 holds docs 0-2, row 1 docs 3-4
batch = stack_rows([r for doc in docs for r in packer.add(doc)] + list(packer.flush()))
assert batch["segment_ids"].shape == (2, 20)
packed, alone = [], []
for d, doc in enumerate(docs):
    row, seg = divmod(d, 3)[0], [1, 2, 3, 1, 2][d]
    labels = np.full_like(batch["labels"], IGNORE)
    where = (np.arange(2)[:, None] == row) & (batch["segment_ids"] == seg)
    labels[where] = batch["labels"][where]
    t = [ms.Tensor(x) for x in (batch["input_ids"], labels, batch["positions"], batch["segment_ids"])]
    packed.append(float(loss(*t).asnumpy()))
    alone.append(float(loss(ms.Tensor(doc[None, :-1].astype(np.int32)),
                            ms.Tensor(doc[None, 1:].astype(np.int32))).asnumpy()))
print("RESULT " + json.dumps({"packed": packed, "alone": alone}))
"""


def test_packed_batch_gives_each_document_its_own_loss_in_graph_mode():
    proc = subprocess.run([sys.executable, "-c", PACKED_SCRIPT],
                          capture_output=True, text=True, timeout=300)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, proc.stderr[-3000:]
    res = json.loads(line[0][7:])
    np.testing.assert_allclose(res["packed"], res["alone"], rtol=2e-6)
    assert len(set(res["alone"])) == 5  # five different documents, five different losses


# -- end to end through the trainer ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, tiny_tokenizer):
    """Made by `mindxh data prepare` (its API) with the tiny tokenizer at the tiny recipe's
    seq_len: two pretraining sets (b is used up within a few steps), an eval set, an SFT set."""
    from mindxh.data.prepare import prepare
    from mindxh.data.synthetic import generate, sample_texts

    root = tmp_path_factory.mktemp("tiny-data")

    def make(name, records, kind="pretrain"):
        src = root / f"{name}.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in records))
        prepare([src], root / name, tiny_tokenizer, kind=kind, seq_len=128, workers=0, progress=False)
        return str(root / name)

    def texts(seed, split, n):
        return [{"text": t} for t in sample_texts(seed, split, [1, 2], n)]

    sft = [{"prompt": p.prompt(), "response": p.response()}
           for p in (generate(5, i, 2) for i in range(40))]
    return {"a": make("a", texts(1, "train", 100)), "b": make("b", texts(2, "train", 10)),
            "eval": make("eval", texts(3, "heldout", 40)), "sft": make("sft", sft, "sft")}


def _prepared_args(tiny_tokenizer, tiny_data, out, steps=6):
    datasets = f"[{{path: {tiny_data['a']}, weight: 3}}, {{path: {tiny_data['b']}, weight: 1}}]"
    return ("train", str(TINY), "--output-dir", str(out), "--no-progress", "--max-steps", str(steps),
            "--set", f"tokenizer.path={tiny_tokenizer}", "--set", "data.source=prepared",
            "--set", f"data.datasets={datasets}", "--set", f"data.eval_dataset={tiny_data['eval']}",
            "--set", "data.heldout_batches=2", "--set", "train.batch_size=4",
            "--set", "train.log_every=1", "--set", "train.checkpoint_every=2",
            "--set", "train.keep_last=5", "--set", "optim.warmup_steps=2")


def _samples(out, rank=0):
    return [json.loads(x) for x in (out / f"samples-rank{rank}.jsonl").read_text().splitlines()]


def _metrics(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


RECORD = {"MINDXH_RECORD_SAMPLES": "1"}


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory, tiny_tokenizer, tiny_data):
    """An uninterrupted 6-step run on the 3:1 mixture, recording its samples."""
    out = tmp_path_factory.mktemp("prepared-run")
    res = run_cli(*_prepared_args(tiny_tokenizer, tiny_data, out), env=RECORD)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_trainer_resume_after_kill_serves_each_sample_once(tmp_path, tiny_tokenizer, tiny_data,
                                                           prepared_run):
    from mindxh.checkpoint.store import FAULT_ENV
    from mindxh.data.shards import load_manifest

    crashed = tmp_path / "crashed"
    res = run_cli(*_prepared_args(tiny_tokenizer, tiny_data, crashed), env={**RECORD, FAULT_ENV: "4"})
    assert res.returncode == -9  # killed writing step 4: steps 3-4 were trained, then lost
    assert [s["step"] for s in _samples(crashed)] == [1, 2, 3, 4]
    res = run_cli(*_prepared_args(tiny_tokenizer, tiny_data, crashed), "--resume", env=RECORD)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "step-00000002" in res.stderr

    want, got = _samples(prepared_run), _samples(crashed)
    assert [s["step"] for s in got] == list(range(1, 7))
    assert got == want
    ids = [i for s in got for i in s["sample_ids"]]
    assert ids == list(range(24))  # 6 steps x 4 samples, none twice, none skipped
    rows = [(d, r) for s in got for d, r in zip(s["dataset_ids"], s["row_ids"])]
    assert Counter(d for d, _ in rows) == {0: 18, 1: 6}  # weights 3:1
    small, n_small = [r for d, r in rows if d == 1], load_manifest(tiny_data["b"])["rows"]
    assert n_small < 6 and sorted(small[:n_small]) == list(range(n_small))  # then a new epoch
    a, b = _metrics(prepared_run), _metrics(crashed)
    assert [(x["loss"], x["grad_norm"]) for x in a] == [(x["loss"], x["grad_norm"]) for x in b]
    assert a[-1]["eval_loss"] is not None and a[-1]["eval_loss"] == b[-1]["eval_loss"]


def test_sft_stage_is_a_prepared_sft_dataset_and_init_from(tmp_path, tiny_tokenizer, tiny_data,
                                                          prepared_run):
    out = tmp_path / "sft"
    res = run_cli("train", str(TINY), "--output-dir", str(out), "--no-progress", "--max-steps", "2",
                  "--set", f"tokenizer.path={tiny_tokenizer}", "--set", "data.source=prepared",
                  "--set", f"data.datasets=[{{path: {tiny_data['sft']}}}]", "--set", "data.heldout_batches=0",
                  "--set", "train.batch_size=4", "--set", "train.log_every=1",
                  "--set", f"train.init_from={prepared_run}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "initialised the weights from" in res.stderr and "step-00000006" in res.stderr
    assert [m["step"] for m in _metrics(out)] == [1, 2]


@pytest.mark.parametrize("override, needle", [
    ("train.seq_len=64", "train.seq_len=64"),
    ("data.datasets=[{{path: {other}}}]", "another tokenizer"),
])
def test_trainer_refuses_mismatched_data_before_compute(tmp_path, tiny_tokenizer, tiny_data,
                                                        override, needle):
    other = write_prepared(tmp_path / "other-tok", random_rows(10, 128, 500), 128, "b" * 64)
    args = _prepared_args(tiny_tokenizer, tiny_data, tmp_path / "o")
    res = run_cli(*args, "--set", override.format(other=other))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert needle in res.stderr and "data.datasets[0].path" in res.stderr
    assert not (tmp_path / "o" / "checkpoints").exists()


@pytest.mark.slow
def test_two_rank_resume_serves_the_uninterrupted_samples(tmp_path, tiny_tokenizer, tiny_data):
    """2 ranks x 4 rows: (run to step 3, resume to 6) == an uninterrupted 2-rank run to 6, and
    the two ranks' rows are disjoint and together exactly those of 1 process x 8 rows."""

    def two_ranks(out, steps, *extra):
        train_args = _prepared_args(tiny_tokenizer, tiny_data, out, steps)[1:]  # drop "train"
        res = run_cli("launch", "--nproc", "2", *train_args, *extra, env=RECORD, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]

    single = tmp_path / "single"
    res = run_cli(*_prepared_args(tiny_tokenizer, tiny_data, single), "--set", "train.batch_size=8",
                  env=RECORD)
    assert res.returncode == 0, res.stderr[-3000:]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    two_ranks(straight, 6)
    two_ranks(resumed, 3)
    two_ranks(resumed, 6, "--resume")
    for rank in (0, 1):
        assert _samples(resumed, rank) == _samples(straight, rank)
        assert [s["step"] for s in _samples(resumed, rank)] == list(range(1, 7))
    for one, r0, r1 in zip(_samples(single), _samples(straight, 0), _samples(straight, 1)):
        assert not set(r0["sample_ids"]) & set(r1["sample_ids"])
        for key in ("sample_ids", "dataset_ids", "row_ids"):
            assert r0[key] + r1[key] == one[key]
