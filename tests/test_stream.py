"""Tests for packed token batches and exact resume."""

from __future__ import annotations

import itertools
import json
from typing import Iterator

import numpy as np
import pytest

from mindxh.data.packing import IGNORE, Packer, positions_from_segments
from mindxh.data.stream import PackedBatcher
from mindxh.data.synthetic import document_source, sample_texts
from mindxh.tokenizer import Tokenizer, train_from_texts

SEQ, BATCH = 48, 3


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    prefix = tmp_path_factory.mktemp("tok") / "spm"
    return train_from_texts(sample_texts(0, "train", [1, 2, 3], 1000), str(prefix), 400)


def _recording(reads: list[int]):
    """A synthetic source that records every document index it hands out."""
    base = document_source(0, "train", [1, 2, 3])

    def make_iter(start: int) -> Iterator[tuple[int, str]]:
        for index, text in base(start):
            reads.append(index)
            yield index, text

    return make_iter


KEYS = ("input_ids", "labels", "positions", "segment_ids")


def test_shape_dtype_and_counters(tok):
    b = PackedBatcher(document_source(0, "train", 2), tok, SEQ, BATCH)
    x = b.next_batch()
    assert set(x) == set(KEYS)
    assert all(x[k].shape == (BATCH, SEQ) and x[k].dtype == np.int32 for k in KEYS)
    assert b.batches_served == 1 and b.next_document_index > 0
    assert x["input_ids"].min() >= 0 and x["input_ids"].max() < tok.vocab_size
    np.testing.assert_array_equal(x["positions"], positions_from_segments(x["segment_ids"]))


def test_rows_are_the_shared_packers_rows(tok):
    """Same rows as mindxh.data.packing.Packer (split=True), i.e. as prepared pretraining data:
    documents back to back, one segment each, a cut document continuing in the next row."""
    b = PackedBatcher(document_source(0, "train", [1, 2, 3]), tok, SEQ, BATCH)
    got = [b.next_batch() for _ in range(5)]
    packer, want = Packer(SEQ, split=True), []
    for _, text in document_source(0, "train", [1, 2, 3])(0):
        want += list(packer.add(tok.encode(text, bos=True, eos=True)))
        if len(want) >= 5 * BATCH:
            break
    for i, row in enumerate(want[: 5 * BATCH]):
        batch, r = divmod(i, BATCH)
        np.testing.assert_array_equal(got[batch]["input_ids"][r], row.input_ids)
        np.testing.assert_array_equal(got[batch]["labels"][r], row.labels)
        np.testing.assert_array_equal(got[batch]["segment_ids"][r], row.segment_ids)
    flat = np.concatenate([g["input_ids"].reshape(-1) for g in got]).tolist()
    assert flat[0] == tok.bos_id and flat.count(tok.bos_id) > 3
    assert tok.pad_id not in flat and all((g["labels"] != IGNORE).all() for g in got)
    assert all((g["segment_ids"] > 0).all() for g in got)  # no padding slot


def test_exact_resume(tok):
    ref_reads: list[int] = []
    ref = PackedBatcher(_recording(ref_reads), tok, SEQ, BATCH)
    want = [ref.next_batch() for _ in range(7)]

    reads: list[int] = []
    first = PackedBatcher(_recording(reads), tok, SEQ, BATCH)
    got = [first.next_batch() for _ in range(3)]
    state = json.loads(json.dumps(first.state_dict()))
    assert state["batches_served"] == 3 and state["inputs"] == first.state_dict()["inputs"]

    second = PackedBatcher(_recording(reads), tok, SEQ, BATCH)
    second.load_state_dict(state)
    got += [second.next_batch() for _ in range(4)]
    for g, w in zip(got, want):
        for k in KEYS:
            np.testing.assert_array_equal(g[k], w[k])
    assert second.batches_served == 7
    # Documents were neither re-read nor skipped across the interruption.
    assert reads == ref_reads
    assert reads == sorted(set(reads))


def test_iterate_documents_continues_where_it_left(tok):
    b = PackedBatcher(document_source(1, "train", 1), tok, SEQ, BATCH)
    docs = list(itertools.islice(b.iterate_documents(), 5))
    more = list(itertools.islice(b.iterate_documents(), 5))
    everything = list(itertools.islice(document_source(1, "train", 1)(0), 10))
    assert docs + more == everything
    assert b.next_document_index == everything[-1][0] + 1


def test_finite_source_stops(tok):
    texts = sample_texts(0, "train", 1, 4)

    def make_iter(start: int) -> Iterator[tuple[int, str]]:
        return ((i, t) for i, t in enumerate(texts) if i >= start)

    slots = sum(len(tok.encode(t)) + 1 for t in texts)  # <s> text </s> fills len + 1 slots
    b = PackedBatcher(make_iter, tok, seq_len=7, batch_size=2)
    batches = list(b)
    assert len(batches) == slots // 14
    with pytest.raises(StopIteration):
        b.next_batch()


def test_bad_state_and_bad_source(tok):
    b = PackedBatcher(document_source(0, "train", 1), tok, SEQ, BATCH)
    b.next_batch()
    state = b.state_dict()
    other = PackedBatcher(document_source(0, "train", 1), tok, SEQ + 1, BATCH)
    with pytest.raises(ValueError, match="seq_len"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="version"):
        other.load_state_dict({**state, "version": 99})

    def backwards(start: int) -> Iterator[tuple[int, str]]:
        yield 5, "a"
        yield 2, "b"

    bad = PackedBatcher(backwards, tok, SEQ, BATCH)
    with pytest.raises(ValueError, match="went back"):
        bad.next_batch()
    with pytest.raises(ValueError, match="positive"):
        PackedBatcher(backwards, tok, 0, BATCH)
