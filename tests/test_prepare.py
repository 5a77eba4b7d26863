"""`mindxh data prepare`: shards equal packing the documents directly, the manifest, determinism
across worker counts, no-op re-runs, crash safety, bad-input accounting, Parquet, the CLI."""
from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli

from mindxh.data import prepare as prepare_mod
from mindxh.data import shards
from mindxh.data.bulk_pack import BulkPacker
from mindxh.data.chat import render_chat
from mindxh.data.packing import IGNORE, Packer
from mindxh.data.prepare import PrepareError, prepare
from mindxh.data.synthetic import sample_texts
from mindxh.tokenizer import Tokenizer, train_from_texts

COLUMNS = ["row_id", "input_ids", "labels", "segment_ids"]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    train_from_texts(sample_texts(0, "train", [1, 2, 3], 400), out / "tok", 512)
    return out / "tok.model"


@pytest.fixture(scope="module")
def tok(tok_path) -> Tokenizer:
    return Tokenizer.load(tok_path)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts(1, "train", [1, 2, 3], 300) + ["two\nlines", "café €5 ünïcode", "x" * 300]


def write_jsonl(path: Path, records, opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def read_rows(directory: Path) -> dict[str, np.ndarray]:
    import mindspore.dataset as ds

    files = [str(p) for p in shards.shard_paths(directory)]
    data = ds.MindDataset(files, columns_list=COLUMNS, shuffle=False, num_parallel_workers=1)
    rows = list(data.create_tuple_iterator(num_epochs=1, output_numpy=True))
    return {c: np.stack([r[i] for r in rows]) for i, c in enumerate(COLUMNS)}


def packed(docs, seq_len: int, split: bool, masks=None) -> dict[str, np.ndarray]:
    packer = Packer(seq_len, split=split)
    masks = masks or [None] * len(docs)
    rows = [r for d, m in zip(docs, masks) for r in packer.add(d, m)] + list(packer.flush())
    return {c: np.stack([getattr(r, c) for r in rows]) if rows else np.zeros((0, seq_len), np.int32)
            for c in COLUMNS[1:]}


def pretrain_docs(tok: Tokenizer, texts) -> list[list[int]]:
    return [[tok.bos_id] + tok.encode(t) + [tok.eos_id] for t in texts]


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if shards.is_shard_file(p.name)}


def stable(manifest: dict) -> dict:
    """The manifest without what differs between identical runs."""
    return {k: v for k, v in manifest.items() if k not in ("command", "created")}


def assert_rows_equal(got: dict, want: dict) -> None:
    assert np.array_equal(got["row_id"], np.arange(want["input_ids"].shape[0]))
    for c in COLUMNS[1:]:
        assert got[c].dtype == np.int32 and np.array_equal(got[c], want[c]), c


def test_pretrain_round_trip_and_manifest(tmp_path, tok_path, tok, texts):
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts[:200])])
    b = tmp_path / "b.txt.gz"  # paragraphs; CRLF and whitespace-only separator lines
    with gzip.open(b, "wb") as f:
        f.write(b"First paragraph,\r\nsecond line.\r\n\r\n\r\nSecond one.\n \t\nThird\n"
                + "\u3000\nFourth\n".encode())  # an ideographic space separates CJK paragraphs
    c = write_jsonl(tmp_path / "c.jsonl.gz", [{"text": t} for t in texts[200:]], opener=gzip.open)
    out = tmp_path / "out"
    m = prepare([a, b, c], out, tok_path, kind="pretrain", seq_len=64, workers=0, rows_per_shard=40,
                command="test")
    docs = texts[:200] + ["First paragraph,\nsecond line.", "Second one.", "Third", "Fourth"] + texts[200:]
    want = packed(pretrain_docs(tok, docs), 64, split=True)
    got = read_rows(out)
    assert_rows_equal(got, want)

    assert shards.verify_shards(out) == m == json.loads((out / "manifest.json").read_text())
    assert m["format"] == "mindxh-packed-v1" and m["kind"] == "pretrain" and m["seq_len"] == 64
    assert m["tokenizer"] == {"path": str(tok_path), "sha256": tok.sha256, "vocab_size": 512}
    assert m["documents"] == len(docs)
    assert m["tokens"] == int((want["segment_ids"] > 0).sum()) == sum(len(d) - 1 for d in pretrain_docs(tok, docs))
    assert m["loss_tokens"] == int((want["labels"] != IGNORE).sum())
    assert m["rows"] == want["input_ids"].shape[0] == sum(s["rows"] for s in m["shards"])
    assert [s["file"] for s in m["shards"]] == [f"shard-{i:05d}.mindrecord" for i in range(len(m["shards"]))]
    assert len(m["shards"]) > 1 and all(s["rows"] == 40 for s in m["shards"][:-1])
    assert [s["first_row"] for s in m["shards"]] == list(np.cumsum([0] + [s["rows"] for s in m["shards"]])[:-1])
    for s in m["shards"]:
        assert s["sha256"] == shards.file_sha256(out / s["file"])
        assert s["db_sha256"] == shards.file_sha256(out / (s["file"] + ".db"))
    assert [(s["path"], s["documents"], s["skipped"]) for s in m["sources"]] == [
        (str(a), 200, {}), (str(b), 4, {}), (str(c), len(texts) - 200, {})]
    assert m["sources"][0]["sha256"] == shards.file_sha256(a) and m["sources"][0]["bytes"] == a.stat().st_size
    assert m["skipped"] == {} and m["command"] == "test" and m["mindxh_version"] and m["created"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json"] + [n for s in m["shards"] for n in (s["file"], s["file"] + ".db")])


def sft_samples(texts: list[str]) -> list[dict]:
    """Chat records from synthetic texts: every third a multi-turn `messages` record (two
    assistant turns, both trained), the others `prompt` + `response`."""
    samples = []
    for i, t in enumerate(texts):
        q, _, r = t.partition("\n")
        if i % 3 == 0:
            samples.append({"messages": [{"role": "system", "content": "Solve it."},
                                         {"role": "user", "content": q},
                                         {"role": "assistant", "content": r},
                                         {"role": "user", "content": "Sure?"},
                                         {"role": "assistant", "content": "Yes."}]})
        else:
            samples.append({"prompt": q, "response": r})
    return samples


def test_sft_round_trip(tmp_path, tok_path, tok, texts):
    samples = sft_samples(texts[:120])
    long = {"prompt": "x " * 400, "response": "y"}
    path = write_jsonl(tmp_path / "sft.jsonl", samples[:50] + [long] + samples[50:])
    m = prepare([path], tmp_path / "out", tok_path, kind="sft", seq_len=192, workers=0)
    rendered = [render_chat(tok, s) for s in samples]
    want = packed([ids for ids, _ in rendered], 192, split=False, masks=[mk for _, mk in rendered])
    got = read_rows(tmp_path / "out")
    assert_rows_equal(got, want)
    # the loss is on assistant tokens (and their </s>) only, in order
    assistant = np.concatenate([ids[1:][mk[1:] == 1] for ids, mk in rendered])
    assert np.array_equal(got["labels"][got["labels"] != IGNORE], assistant)
    assert m["documents"] == len(samples) and m["loss_tokens"] == assistant.shape[0]
    assert m["skipped"] == {"too_long": 1} and m["sources"][0]["skipped_lines"] == {"too_long": [51]}


def test_sft_samples_with_nothing_to_learn_are_skipped_as_empty(tmp_path, tok_path, texts):
    samples = sft_samples(texts[:20])
    empty = [{"prompt": "", "response": ""}, {"prompt": "q", "response": "  \n"},
             {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}]
    path = write_jsonl(tmp_path / "sft.jsonl", samples[:5] + empty + samples[5:])
    m = prepare([path], tmp_path / "out", tok_path, kind="sft", seq_len=192, workers=0)
    assert m["documents"] == len(samples)
    assert m["skipped"] == {"empty": 3} and m["sources"][0]["skipped_lines"] == {"empty": [6, 7, 8]}
    with pytest.raises(Exception, match="sft.jsonl:6: .*empty"):
        prepare([path], tmp_path / "strict", tok_path, kind="sft", seq_len=192, workers=0,
                strict=True)


def test_workers_1_and_2_write_identical_bytes(tmp_path, tok_path, texts, monkeypatch):
    monkeypatch.setattr(prepare_mod, "_CHUNK_BYTES", 2048)  # many chunks in flight
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts] + ["{bad"] + [{"text": t} for t in texts])
    m1 = prepare([path], tmp_path / "w1", tok_path, seq_len=128, workers=1, rows_per_shard=50)
    m2 = prepare([path], tmp_path / "w2", tok_path, seq_len=128, workers=2, rows_per_shard=50)
    m0 = prepare([path], tmp_path / "w0", tok_path, seq_len=128, workers=0, rows_per_shard=50)
    assert stable(m1) == stable(m2) == stable(m0) and len(m1["shards"]) > 2
    assert shard_bytes(tmp_path / "w1") == shard_bytes(tmp_path / "w2") == shard_bytes(tmp_path / "w0")
    assert m1["sources"][0]["skipped_lines"] == {"malformed_json": [len(texts) + 1]}


def test_rerun_is_a_noop_and_other_datasets_are_refused(tmp_path, tok_path, texts, caplog):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "README.txt").write_text("the user's own file")
    m1 = prepare([path], out, tok_path, seq_len=64, workers=0, rows_per_shard=60)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with caplog.at_level(logging.INFO, logger="mindxh"):
        m2 = prepare([path], out, tok_path, seq_len=64, workers=0, rows_per_shard=60, command="again")
    assert m2 == m1 and "nothing to do" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    with pytest.raises(PrepareError, match="different prepared dataset.*--overwrite"):
        prepare([path], out, tok_path, seq_len=32, workers=0)
    m3 = prepare([path], out, tok_path, seq_len=32, workers=0, overwrite=True)
    assert m3["seq_len"] == 32 and shards.verify_shards(out) == m3
    assert (out / "README.txt").read_text() == "the user's own file" and (out / "notes").is_dir()
    assert sorted(p.name for p in out.iterdir() if shards.is_shard_file(p.name)) == sorted(
        n for s in m3["shards"] for n in (s["file"], s["file"] + ".db"))
    # a damaged shard is prepared again, not reported as done
    (out / "shard-00000.mindrecord").write_bytes(b"junk")
    assert prepare([path], out, tok_path, seq_len=32, workers=0, overwrite=False)["shards"] == m3["shards"]
    # a directory with someone else's shard files, or manifest, is refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "shard-00000.mindrecord").write_bytes(b"not ours")
    with pytest.raises(PrepareError, match="holds shard files.*--overwrite"):
        prepare([path], other, tok_path, seq_len=32, workers=0)
    (other / "shard-00000.mindrecord").unlink()
    (other / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(PrepareError, match="something-else.*--overwrite"):
        prepare([path], other, tok_path, seq_len=32, workers=0)


def test_interrupted_run_leaves_no_manifest_and_rerun_completes(tmp_path, tok_path, texts):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "out"
    args = ["data", "prepare", "--kind", "pretrain", "--tokenizer", str(tok_path), "--seq-len", "64",
            "--rows-per-shard", "30", "--workers", "1", "--out", str(out), str(path)]
    proc = run_cli(*args, env={"MINDXH_FAULT_KILL_IN_PREPARE": "2"}, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert not (out / "manifest.json").exists()
    partial = [p for p in out.iterdir() if p.name.startswith(".partial-")]
    assert len(partial) == 1 and (partial[0] / "shard-00001.mindrecord").is_file()
    with pytest.raises(shards.ShardError, match="no manifest.json"):
        shards.load_manifest(out)
    # a run killed while moving its shards in (simulated): shard files in DIR, no manifest
    (out / "shard-00000.mindrecord").write_bytes(b"half moved")
    m = prepare([path], out, tok_path, seq_len=64, workers=0, rows_per_shard=30)
    clean = prepare([path], tmp_path / "clean", tok_path, seq_len=64, workers=0, rows_per_shard=30)
    assert stable(m) == stable(clean) and shard_bytes(out) == shard_bytes(tmp_path / "clean")
    assert not [p for p in out.iterdir() if p.name.startswith(".partial-")]


def test_bad_input_is_counted_per_file_and_fatal_under_strict(tmp_path, tok_path, texts, caplog, monkeypatch):
    monkeypatch.setattr(prepare_mod, "_CHUNK_BYTES", 512)  # line numbers across chunk boundaries
    good = [json.dumps({"text": t}) for t in texts[:40]]
    lines = good[:10] + [
        '{"text": "broken',                 # 11 malformed
        '["a list"]',                       # 12 wrong type (not an object)
        '{"title": "no text"}',             # 13 missing field
        '{"text": 7}',                      # 14 wrong type
        '{"text": "  "}',                   # 15 empty
        json.dumps({"text": "y" * 500}),    # 16 over-long (max_doc_chars=400)
        "",                                 # 17 blank: ignored
        '{"text": "\\ud800 lone"}',         # 18 undecodable (lone surrogate)
    ] + good[10:20] + ['{"text": 1}'] + good[20:]   # 29 wrong type
    a = tmp_path / "a.jsonl"
    a.write_bytes("\n".join(lines).encode() + b"\n" + b'{"text": "\xff\xfe"}\n' + b"{}\n")  # 50 undecodable, 51 missing
    b = tmp_path / "b.txt"
    b.write_bytes(b"fine paragraph\n\nbad \xc3\x28 bytes\nmore\n\nalso fine\n")
    with caplog.at_level(logging.INFO, logger="mindxh"):
        m = prepare([a, b], tmp_path / "out", tok_path, seq_len=64, workers=2, max_doc_chars=400)
    sa, sb = m["sources"]
    assert sa["skipped"] == {"malformed_json": 1, "wrong_type": 3, "missing_field": 2, "empty": 1,
                             "too_long": 1, "undecodable": 2}
    assert sa["skipped_lines"] == {"malformed_json": [11], "wrong_type": [12, 14, 29], "missing_field": [13, 51],
                                   "empty": [15], "too_long": [16], "undecodable": [18, 50]}
    assert sa["documents"] == 40 and sb["documents"] == 2
    assert sb["skipped"] == {"undecodable": 1} and sb["skipped_lines"] == {"undecodable": [3]}
    assert m["skipped"] == {"empty": 1, "malformed_json": 1, "missing_field": 2, "too_long": 1,
                            "undecodable": 3, "wrong_type": 3}
    assert f"{a}: skipped" in caplog.text and "3 wrong_type (lines 12, 14, 29)" in caplog.text
    with pytest.raises(PrepareError, match=rf"^{a}:11: malformed JSON"):
        prepare([a, b], tmp_path / "strict", tok_path, seq_len=64, workers=0, strict=True)
    assert not (tmp_path / "strict").exists()  # its partial files are gone, and the DIR it made
    (tmp_path / "strict").mkdir()  # a DIR the user made stays
    with pytest.raises(PrepareError, match=rf"^{b}:3: not valid UTF-8"):
        prepare([b], tmp_path / "strict", tok_path, seq_len=64, workers=0, strict=True)
    assert (tmp_path / "strict").is_dir() and not list((tmp_path / "strict").iterdir())
    with pytest.raises(PrepareError, match=rf"^{a}:11: malformed JSON .*without --strict"):
        prepare([a, b], tmp_path / "out", tok_path, seq_len=64, workers=0, max_doc_chars=400, strict=True)


def test_corrupt_shard_fails_verification_naming_it(tmp_path, tok_path, texts):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "out"
    prepare([path], out, tok_path, seq_len=64, workers=0, rows_per_shard=60)
    shard = out / "shard-00001.mindrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(shards.ShardError, match=r"shard-00001\.mindrecord: checksum mismatch"):
        shards.verify_shards(out)
    (out / "shard-00002.mindrecord.db").unlink()
    shard.write_bytes(bytes(data[:0]))
    with pytest.raises(shards.ShardError, match=r"shard-00001\.mindrecord"):
        shards.verify_shards(out)


def test_parquet_inputs_match_jsonl(tmp_path, tok_path, texts):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    docs = texts[:100]
    pq.write_table(pa.table({"text": docs[:50] + [None] + docs[50:], "n": list(range(101))}), tmp_path / "p.parquet")
    write_jsonl(tmp_path / "p.jsonl", [{"text": t} for t in docs])
    mp = prepare([tmp_path / "p.parquet"], tmp_path / "pq", tok_path, seq_len=64, workers=0)
    mj = prepare([tmp_path / "p.jsonl"], tmp_path / "js", tok_path, seq_len=64, workers=0)
    assert shard_bytes(tmp_path / "pq") == shard_bytes(tmp_path / "js") and mp["documents"] == mj["documents"] == 100
    assert mp["sources"][0]["skipped_lines"] == {"missing_field": [51]}

    pairs = [t.partition("\n") for t in docs[:40]]
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": r}] for q, _, r in pairs]
    pq.write_table(pa.table({"messages": chats}), tmp_path / "m.parquet")
    pq.write_table(pa.table({"prompt": [q for q, _, _ in pairs], "response": [r for _, _, r in pairs]}),
                   tmp_path / "pr.parquet")
    m1 = prepare([tmp_path / "m.parquet"], tmp_path / "m", tok_path, kind="sft", seq_len=192, workers=0)
    m2 = prepare([tmp_path / "pr.parquet"], tmp_path / "pr", tok_path, kind="sft", seq_len=192, workers=0)
    assert m1["documents"] == m2["documents"] == 40
    assert shard_bytes(tmp_path / "m") == shard_bytes(tmp_path / "pr")
    with pytest.raises(PrepareError, match=r"p\.parquet: no column 'messages'|no column 'prompt'"):
        prepare([tmp_path / "p.parquet"], tmp_path / "bad", tok_path, kind="sft", seq_len=64, workers=0)


def test_bad_arguments_name_the_problem(tmp_path, tok_path):
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(PrepareError, match=r"a\.csv: unknown input format"):
        prepare([tmp_path / "a.csv"], tmp_path / "o", tok_path, seq_len=8)
    with pytest.raises(PrepareError, match=r"missing\.jsonl: input file not found"):
        prepare([tmp_path / "missing.jsonl"], tmp_path / "o", tok_path, seq_len=8)
    (tmp_path / "shards.jsonl").mkdir()
    for folder in (tmp_path, tmp_path / "shards.jsonl"):
        with pytest.raises(PrepareError, match="is a directory; give the files in it"):
            prepare([folder], tmp_path / "o", tok_path, seq_len=8)
    (tmp_path / "t.txt").write_text("hello\n")
    with pytest.raises(PrepareError, match=r"t\.txt: plain text is pretraining data"):
        prepare([tmp_path / "t.txt"], tmp_path / "o", tok_path, kind="sft", seq_len=8, workers=0)
    (tmp_path / "e.jsonl").write_text('{"text": ""}\n')
    with pytest.raises(PrepareError, match="no usable documents.*empty"):
        prepare([tmp_path / "e.jsonl"], tmp_path / "o", tok_path, seq_len=8, workers=0)


def test_cli(tmp_path, tok_path, texts):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": t.partition("\n")[0], "response": t.partition("\n")[2]}
                                                 for t in texts[:50]] + ['{"prompt": 1, "response": "x"}'])
    out = tmp_path / "out"
    args = ["data", "prepare", "--kind", "sft", "--tokenizer", str(tok_path), "--seq-len", "256",
            "--workers", "2", "--out", str(out), str(path)]
    proc = run_cli(*args, "--strict", timeout=300)
    assert proc.returncode == 2 and f"error: {path}:51: 'prompt' and 'response' must be strings" in proc.stderr
    proc = run_cli(*args, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "done: 50 documents" in proc.stdout and "1 records skipped" in proc.stdout
    m = shards.verify_shards(out)
    assert m["command"].startswith("mindxh data prepare --kind sft") and m["skipped"] == {"wrong_type": 1}


def test_bulk_packer_equals_packer():
    rng = np.random.default_rng(0)
    for split in (True, False):
        for seq_len in (1, 2, 7, 32):
            for _ in range(20):
                top = 3 * seq_len + 3 if split else seq_len + 1
                docs = [rng.integers(3, 99, int(rng.integers(1, top + 1))).astype(np.int32)
                        for _ in range(int(rng.integers(0, 30)))]
                masks = [rng.integers(0, 2, d.shape[0]).astype(np.int8) for d in docs]
                want = packed(docs, seq_len, split, None if split else masks)
                packer, got, i = BulkPacker(seq_len, split), [], 0
                while i < len(docs):
                    k = int(rng.integers(1, 6))
                    part, mpart = docs[i:i + k], masks[i:i + k]
                    i += k
                    got.append(packer.add(np.concatenate(part), np.array([d.shape[0] for d in part]),
                                          None if split else np.concatenate(mpart)))
                got.append(packer.flush())
                for j, c in enumerate(COLUMNS[1:]):
                    rows = np.concatenate([g[j] for g in got])
                    assert np.array_equal(rows, want[c]), (split, seq_len, c)


# -- a Hugging Face tokenizer.json (what Tokenizer.load, and so `mindxh train`, accepts) ----------

def split_on(ids: np.ndarray, sep: int) -> list[np.ndarray]:
    """`ids` cut after every `sep` (dropped); what follows the last one is dropped too."""
    ends = np.flatnonzero(ids == sep)
    return [ids[a + 1:b] for a, b in zip(np.r_[-1, ends[:-1]], ends)]


def test_tokenizer_json_pretrain(tmp_path, json_tok_path, texts, caplog):
    tok = Tokenizer.load(json_tok_path)
    assert tok.bos_id == tok.piece_to_id("<|go|>") and tok.eos_id == tok.piece_to_id("<|stop|>")
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "out"
    m = prepare([path], out, json_tok_path, seq_len=64, workers=0, rows_per_shard=40)
    assert m["tokenizer"] == {"path": str(json_tok_path), "sha256": shards.file_sha256(json_tok_path),
                              "vocab_size": tok.vocab_size} and tok.sha256 == m["tokenizer"]["sha256"]
    got = read_rows(out)
    assert_rows_equal(got, packed(pretrain_docs(tok, texts), 64, split=True))
    # the labels are each document's text then its EOS, in order: they decode back to the input
    labels = got["labels"][got["segment_ids"] > 0]
    assert [tok.decode(d) for d in split_on(labels, tok.eos_id)] == texts
    # worker processes (spawned: they get the tokenizer, config-given ids included) write the same bytes
    m2 = prepare([path], tmp_path / "w2", json_tok_path, seq_len=64, workers=2, rows_per_shard=40)
    assert stable(m2) == stable(m) and shard_bytes(tmp_path / "w2") == shard_bytes(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with caplog.at_level(logging.INFO, logger="mindxh"):
        assert prepare([path], out, json_tok_path, seq_len=64, workers=0, rows_per_shard=40) == m
    assert "nothing to do" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_tokenizer_json_data_passes_the_trainers_check(tmp_path, json_tok_path, tok_path, texts):
    """`mindxh train` opens prepared data with the sha256 of Tokenizer.load(tokenizer.path): the
    same as the manifest's, so it trains on data prepared with a tokenizer.json."""
    from mindxh.data.loader import DataError, PreparedDataset

    path = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts[:50]])
    prepare([path], tmp_path / "out", json_tok_path, seq_len=64, workers=0)
    data = PreparedDataset.open(tmp_path / "out", "data.train", 64, Tokenizer.load(json_tok_path).sha256)
    assert data.rows > 0
    with pytest.raises(DataError, match="another tokenizer"):
        PreparedDataset.open(tmp_path / "out", "data.train", 64, Tokenizer.load(tok_path).sha256)
    # and a (2-step, ~10 s) training run on it, with tokenizer.path naming the tokenizer.json
    run = tmp_path / "run"
    proc = run_cli("train", str(TINY), "--output-dir", str(run), "--no-progress", "--max-steps", "2",
                   "--set", f"tokenizer.path={json_tok_path}", "--set", "data.source=prepared",
                   "--set", f"data.datasets=[{{path: {tmp_path / 'out'}, weight: 1}}]",
                   "--set", "train.seq_len=64", "--set", "train.batch_size=2",
                   "--set", "data.heldout_batches=0", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done: 2 steps" in proc.stdout


def test_tokenizer_json_sft(tmp_path, json_tok_path, texts):
    tok = Tokenizer.load(json_tok_path)
    samples = sft_samples(texts[:60])
    long = {"prompt": "x " * 400, "response": "y"}
    path = write_jsonl(tmp_path / "sft.jsonl", samples[:20] + [long] + samples[20:])
    m = prepare([path], tmp_path / "out", json_tok_path, kind="sft", seq_len=192, workers=0)
    assert m["tokenizer"]["sha256"] == tok.sha256 and m["tokenizer"]["vocab_size"] == tok.vocab_size
    rendered = [render_chat(tok, s) for s in samples]
    want = packed([ids for ids, _ in rendered], 192, split=False, masks=[mk for _, mk in rendered])
    got = read_rows(tmp_path / "out")
    assert_rows_equal(got, want)
    # the loss is on assistant tokens (and their EOS) only: they decode to the answers, in order
    learnt = got["labels"][got["labels"] != IGNORE]
    answers = [m_["content"] for s in samples
               for m_ in s.get("messages", [{"role": "assistant", "content": s.get("response")}])
               if m_["role"] == "assistant"]
    assert [tok.decode(a) for a in split_on(learnt, tok.eos_id)] == answers
    assert m["loss_tokens"] == learnt.shape[0] and m["documents"] == len(samples)
    assert m["skipped"] == {"too_long": 1} and m["sources"][0]["skipped_lines"] == {"too_long": [21]}


def test_bad_tokenizer_files_are_named(tmp_path, json_tok_path, texts):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts[:5]])
    for name, content in (("bad.json", '{"not": "a tokenizer"}'), ("vocab.txt", "a\nb\n")):
        (tmp_path / name).write_text(content)
        with pytest.raises(PrepareError, match=re.escape(str(tmp_path / name)) + ".*expected a "
                                               r"SentencePiece \.model, or a Hugging Face tokenizer\.json"):
            prepare([path], tmp_path / "o", tmp_path / name, seq_len=8, workers=0)
    with pytest.raises(PrepareError, match="not found: " + re.escape(str(tmp_path / "none.json"))):
        prepare([path], tmp_path / "o", tmp_path / "none.json", seq_len=8, workers=0)
    with pytest.raises(PrepareError, match=re.escape(f"{tmp_path} is a directory")):
        prepare([path], tmp_path / "o", tmp_path, seq_len=8, workers=0)
    nobos = tmp_path / "nobos" / "tokenizer.json"  # no config beside it, and no well-known names
    nobos.parent.mkdir()
    nobos.write_bytes(json_tok_path.read_bytes())
    with pytest.raises(PrepareError, match=re.escape(f"{nobos} has no bos_token or eos_token") + ".*tokenizer_config"):
        prepare([path], tmp_path / "o", nobos, seq_len=8, workers=0)
    assert not (tmp_path / "o" / "manifest.json").exists()
