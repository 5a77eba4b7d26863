"""Tests for the SentencePiece tokenizer and its CLI."""

from __future__ import annotations

import argparse
import hashlib
import os

import pytest

from mindxh.cli import tokenizer_cmd as cli
from mindxh.data.synthetic import sample_texts
from mindxh.tokenizer import REASONING_TOKENS, Tokenizer, train, train_from_texts

VOCAB = 512


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return sample_texts(0, "train", [1, 2, 3], 2000)


@pytest.fixture(scope="module")
def tok(tmp_path_factory, corpus) -> Tokenizer:
    prefix = tmp_path_factory.mktemp("tok") / "spm"
    return train_from_texts(corpus, str(prefix), VOCAB)


def test_fixed_ids_and_pieces(tok):
    assert tok.vocab_size == VOCAB == len(tok)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    ids = [tok.think_id, tok.think_end_id, tok.answer_id, tok.answer_end_id]
    assert [tok.id_to_piece(i) for i in ids] == list(REASONING_TOKENS)
    assert len(set(ids)) == 4 and min(ids) > 3


def test_special_tokens_are_single_ids(tok):
    assert tok.encode("<think>") == [tok.think_id]
    assert tok.encode("</think>") == [tok.think_end_id]
    assert tok.encode("<answer>") == [tok.answer_id]
    assert tok.encode("</answer>") == [tok.answer_end_id]
    ids = tok.encode("x<think>1+2=3</think><answer>3</answer>y")
    for special in (tok.think_id, tok.think_end_id, tok.answer_id, tok.answer_end_id):
        assert ids.count(special) == 1
    # Control pieces typed as text are not the control ids.
    assert tok.bos_id not in tok.encode("<s>") and tok.eos_id not in tok.encode("</s>")


def test_round_trip_synthetic_docs(tok):
    docs = sample_texts(7, "heldout", [1, 2, 3], 200)
    for doc in docs:
        ids = tok.encode(doc)
        assert tok.unk_id not in ids
        assert tok.decode(ids) == doc


@pytest.mark.parametrize(
    "text", [" lead", "two  spaces", "a\nb\n\nc", "tab\there", "café €5", "end "]
)
def test_round_trip_odd_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_digits_are_split(tok, corpus):
    pieces = [tok.id_to_piece(i) for i in tok.encode("12345 + 678")]
    assert [p for p in pieces if any(ch.isdigit() for ch in p)] == list("12345678")
    for doc in corpus[:100]:
        for i in tok.encode(doc):
            piece = tok.id_to_piece(i)
            if any(ch.isdigit() for ch in piece):
                assert len(piece.lstrip("\u2581")) == 1, piece


def test_bos_eos_and_decode_drops_control(tok):
    ids = tok.encode("Anna has 3 coins.", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.bos_id not in ids[1:-1] and tok.eos_id not in ids[1:-1]
    assert tok.decode(ids + [tok.pad_id, tok.pad_id]) == "Anna has 3 coins."


def test_files_written_atomically_and_sha(tok):
    model = tok.path
    assert model.endswith(".model")
    names = sorted(os.listdir(os.path.dirname(model)))
    assert names == ["spm.model", "spm.vocab"]  # no temporary leftovers
    data = open(model, "rb").read()
    assert tok.sha256 == hashlib.sha256(data).hexdigest()
    with open(model[: -len(".model")] + ".vocab", encoding="utf-8") as f:
        assert sum(1 for _ in f) == VOCAB
    again = Tokenizer.load(model)
    assert again.sha256 == tok.sha256 and again.encode("3+4=7") == tok.encode("3+4=7")


def test_training_is_deterministic_and_quiet(tmp_path, corpus, capfd):
    capfd.readouterr()
    a = train_from_texts(corpus[:500], str(tmp_path / "a" / "one"), 400)
    assert capfd.readouterr().err == ""  # SentencePiece's log is silenced
    b = train_from_texts(corpus[:500], str(tmp_path / "b" / "two"), 400)
    assert open(a.path, "rb").read() == open(b.path, "rb").read()
    c = train_from_texts(corpus[:500], str(tmp_path / "c" / "one"), 420)
    assert c.sha256 != a.sha256


def test_train_from_files_is_deterministic_and_round_trips(tmp_path, corpus):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        text = "\n".join(corpus[:500]) + "\n"
        (tmp_path / d / f"corpus_{d}.txt").write_text(text, encoding="utf-8")
    a = Tokenizer.train([str(tmp_path / "x" / "corpus_x.txt")], str(tmp_path / "x" / "m"), 400)
    b = train([tmp_path / "y" / "corpus_y.txt"], tmp_path / "y" / "m", 400)
    assert a.sha256 == b.sha256
    doc = corpus[600]
    ids = a.encode(doc)
    assert a.decode(ids) == doc
    # Lines are sentences, so "\n" was never seen: it is the byte piece.
    assert a.id_to_piece(ids[ids.index(a.think_id) - 1]) == "<0x0A>"


def test_input_files_gzip_bom_and_unreadable(tmp_path, corpus):
    """A gzip file or a UTF-8 file with a byte-order mark and CRLF trains the same model as
    the plain file; a file that is not UTF-8 text, or holds none, is an error naming file
    and line, and nothing is written."""
    import gzip

    text = "\n".join(corpus[:500]) + "\n"
    plain, gz, bom = tmp_path / "c.txt", tmp_path / "c.txt.gz", tmp_path / "bom.txt"
    plain.write_text(text, encoding="utf-8")
    gz.write_bytes(gzip.compress(text.encode()))
    bom.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    models = [train([p], tmp_path / "out" / p.stem, 400).sha256 for p in (plain, gz, bom)]
    assert models[0] == models[1] == models[2]
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(text.encode() + b"caf\xe9\n")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    bad_line = text.count("\n") + 1
    for bad, needle in ((latin1, f"latin1.txt, line {bad_line}: not UTF-8 text"),
                        (blank, "blank.txt: no text to train on")):
        with pytest.raises(ValueError, match=needle):
            train([plain, bad], tmp_path / "bad" / "m", 400)
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_the_recipe_check_knows_the_fixed_pieces(tmp_path, corpus):
    from mindxh.config.schema import TRAINED_VOCAB_FLOOR

    tok = train_from_texts(corpus[:200], str(tmp_path / "t"), 400)
    fixed = [i for i in range(tok.vocab_size) if tok.id_to_piece(i).startswith("<0x")
             or tok.id_to_piece(i) in ("<pad>", "<unk>", "<s>", "</s>", *REASONING_TOKENS)]
    assert len(fixed) == TRAINED_VOCAB_FLOOR


def test_vocab_size_errors(tmp_path, corpus):
    with pytest.raises(ValueError, match=r"vocab_size=100000 is too large.*smaller"):
        train_from_texts(corpus[:200], str(tmp_path / "big"), 100000)
    with pytest.raises(ValueError, match=r"vocab_size=200 is too small.*larger"):
        train_from_texts(corpus[:200], str(tmp_path / "small"), 200)
    with pytest.raises(ValueError, match="model_type"):
        train_from_texts(corpus[:200], str(tmp_path / "t"), 400, model_type="bogus")
    assert not list(tmp_path.iterdir())  # nothing written on failure


def test_missing_and_bad_files(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        train([str(missing)], str(tmp_path / "m"), 400)
    with pytest.raises(FileNotFoundError, match="absent.model"):
        Tokenizer.load(tmp_path / "absent.model")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        Tokenizer.load(bad)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mindxh")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_synthetic(tmp_path, capsys):
    out = tmp_path / "cli" / "tok"
    args = _parse(["tokenizer", "train", "--synthetic", "2000", "--vocab-size", "384",
                   "--out", str(out), "--seed", "1", "--levels", "1,2"])
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    loaded = Tokenizer.load(f"{out}.model")
    assert line == f"tokenizer vocab_size=384 path={out}.model sha256={loaded.sha256[:12]}"
    doc = sample_texts(1, "train", [1, 2], 1)[0]
    assert loaded.decode(loaded.encode(doc)) == doc


def test_cli_reports_errors(tmp_path, capsys):
    from mindxh.cli.main import main

    # 256 pieces cannot hold 256 byte-fallback pieces plus the specials.
    assert main(["tokenizer", "train", "--synthetic", "2000", "--vocab-size", "256",
                 "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "vocab_size=256 is too small" in err
    assert main(["tokenizer", "train", "--input", str(tmp_path / "none.txt"),
                 "--vocab-size", "400", "--out", str(tmp_path / "t")]) == 2
    assert "none.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["tokenizer", "train", "--synthetic", "5", "--vocab-size", "400",
                "--out", "x", "--levels", "1,7"])
