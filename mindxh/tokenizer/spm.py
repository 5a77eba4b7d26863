"""SentencePiece tokenizer with the reasoning special tokens.

Choices, and why:

* Fixed ids ``<pad>=0 <unk>=1 <s>=2 </s>=3`` so configs and data agree.
* ``<think> </think> <answer> </answer>`` are user-defined symbols: always one
  id, never split, so rewards and masks can find them by id.
* ``split_digits``: every digit is its own token, which arithmetic needs.
* ``byte_fallback``: any character round trips (costs 256 byte pieces, so the
  vocabulary must be larger than about 260 + the corpus's distinct characters).
* Identity normalisation, no dummy prefix, no whitespace squashing: so
  ``decode(encode(t)) == t`` exactly, spaces and newlines included.
* Newlines: SentencePiece treats each *line* of an input file as a sentence,
  so a model trained from files never sees ``"\\n"`` and encodes it with the
  byte piece ``<0x0A>`` (still one id, still a round trip).
  :func:`train_from_texts` passes whole documents instead, so ``"\\n"`` is
  learnt as an ordinary character.
* Determinism: training is single threaded, unshuffled, unsampled, and the
  model is taken from memory (no file names end up inside it), so the same
  input gives a byte-identical ``.model`` file wherever it is trained.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import sentencepiece as spm

from mindxh.errors import MindxhError, MissingFileError
from mindxh.utils.fsio import atomic_write

__all__ = ["REASONING_TOKENS", "Tokenizer", "train", "train_from_texts"]

logger = logging.getLogger(__name__)


class TokenizerError(MindxhError, ValueError):
    """A file that is no usable tokenizer, or training settings the corpus cannot satisfy."""


REASONING_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")
_MODEL_TYPES = ("bpe", "unigram", "char", "word")
# SentencePiece silently skips longer sentences (default 4192 bytes); whole
# documents from train_from_texts can be longer than one line of a file.
_MAX_SENTENCE_BYTES = 1 << 16


class Tokenizer:
    """A loaded SentencePiece model plus the ids the training code needs."""

    def __init__(self, model_bytes: bytes, path: str | None = None) -> None:
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_bytes)
        except (RuntimeError, OSError) as exc:
            where = path or "<bytes>"
            raise TokenizerError(f"{where} is not a SentencePiece model: {exc}") from exc
        self.path = path
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
        # None where absent: a converted Hugging Face model's tokenizer has no reasoning tokens
        ids = [self._sp.PieceToId(p) for p in REASONING_TOKENS]
        ids = [None if i == self._sp.unk_id() else i for i in ids]
        self.think_id, self.think_end_id, self.answer_id, self.answer_end_id = ids

    # -- construction -----------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Tokenizer":
        """A SentencePiece `.model`, or for a `.json` file a Hugging Face tokenizer.json
        (`JsonTokenizer`, same interface), so `tokenizer.path` may name either."""
        p = Path(path)
        if not p.is_file():
            raise MissingFileError(f"tokenizer model not found: {p}")
        if p.suffix == ".json":
            from mindxh.tokenizer.hf_json import JsonTokenizer

            return JsonTokenizer.load(p)  # type: ignore[return-value]
        return cls(p.read_bytes(), path=str(p))

    @classmethod
    def train(
        cls,
        input_files: Sequence[str | os.PathLike[str]],
        model_prefix: str | os.PathLike[str],
        vocab_size: int,
        model_type: str = "bpe",
        character_coverage: float = 1.0,
    ) -> "Tokenizer":
        """Train on text files (one sentence per line); see :func:`train`."""
        return train(input_files, model_prefix, vocab_size, model_type, character_coverage)

    # -- ids ----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return int(self._sp.GetPieceSize())

    @property
    def pad_id(self) -> int:
        return int(self._sp.pad_id())

    @property
    def unk_id(self) -> int:
        return int(self._sp.unk_id())

    @property
    def bos_id(self) -> int:
        return int(self._sp.bos_id())

    @property
    def eos_id(self) -> int:
        return int(self._sp.eos_id())

    def id_to_piece(self, token_id: int) -> str:
        return str(self._sp.IdToPiece(int(token_id)))

    def piece_to_id(self, piece: str) -> int:
        return int(self._sp.PieceToId(piece))

    # -- text <-> ids -------------------------------------------------------
    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = list(self._sp.EncodeAsIds(text))
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text (no bos/eos) in one call, on one thread: ``data prepare``
        encodes a chunk of documents at once and parallelises with processes."""
        return self._sp.encode(list(texts), out_type=int, num_threads=1)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; pad/bos/eos are dropped (they are control pieces)."""
        return str(self._sp.DecodeIds([int(i) for i in ids]))

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]}, "
            f"path={self.path!r})"
        )


def train(
    input_files: Sequence[str | os.PathLike[str]],
    model_prefix: str | os.PathLike[str],
    vocab_size: int,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
) -> Tokenizer:
    """Train on text files, each line one sentence; write ``PREFIX.model``/``.vocab``."""
    if not input_files:
        raise TokenizerError("no input files given")
    paths = [Path(f) for f in input_files]
    for p in paths:
        if not p.is_file():
            raise MissingFileError(f"tokenizer training input not found: {p}")
    lines = _FileLines(paths)
    try:
        return _train(iter(lines), model_prefix, vocab_size, model_type, character_coverage)
    except (TokenizerError, RuntimeError):
        if lines.error:  # what the reader stopped at, not SentencePiece's wrapped view of it
            raise TokenizerError(lines.error) from None
        raise


def train_from_texts(
    texts: Iterable[str],
    model_prefix: str | os.PathLike[str],
    vocab_size: int,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
) -> Tokenizer:
    """Train on whole documents (newlines inside a document are kept and learnt)."""
    return _train(iter(texts), model_prefix, vocab_size, model_type, character_coverage)


class _FileLines:
    """The lines of text files (gzip or plain UTF-8, a byte-order mark dropped) for
    SentencePiece. A file it cannot read ends training with `error`, naming the file and
    line (SentencePiece would report only its own wrapped message), before anything is
    written."""

    def __init__(self, paths: Sequence[Path]):
        self.paths, self.error = paths, None

    def __iter__(self) -> Iterator[str]:
        for p in self.paths:
            with p.open("rb") as raw:
                gz = raw.read(2) == b"\x1f\x8b"
            n, text = 0, False
            try:
                with (gzip.open if gz else open)(p, "rb") as f:
                    for n, raw in enumerate(f, 1):  # bytes per line: the error's line is exact
                        line = raw.decode("utf-8-sig" if n == 1 else "utf-8").rstrip("\r\n")
                        text = text or bool(line.strip())
                        yield line
            except (UnicodeDecodeError, OSError, EOFError) as exc:
                bad_text = isinstance(exc, UnicodeDecodeError)  # line n itself; else the read after it
                what = "not UTF-8 text" if bad_text else str(exc)
                self.error = f"{p}, line {n if bad_text else n + 1}: {what}"
                raise TokenizerError(self.error) from None  # SentencePiece rewraps it
            if not text:
                self.error = f"{p}: no text to train on (the file is empty or blank)"
                raise TokenizerError(self.error)


def _train(
    sentences: Iterator[str],
    model_prefix: str | os.PathLike[str],
    vocab_size: int,
    model_type: str,
    character_coverage: float,
) -> Tokenizer:
    if model_type not in _MODEL_TYPES:
        raise TokenizerError(f"unknown model_type {model_type!r}; expected one of {_MODEL_TYPES}")
    if vocab_size <= 0:
        raise TokenizerError(f"vocab_size must be positive, got {vocab_size}")
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.Train(
            sentence_iterator=sentences,
            model_writer=writer,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
            user_defined_symbols=list(REASONING_TOKENS),
            split_digits=True,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            add_dummy_prefix=False,
            num_threads=1,
            shuffle_input_sentence=False,
            input_sentence_size=0,
            max_sentence_length=_MAX_SENTENCE_BYTES,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise _vocab_error(exc, vocab_size) from exc
    model_bytes = writer.getvalue()
    tok = Tokenizer(model_bytes)
    model_path = Path(f"{model_prefix}.model")
    atomic_write(model_path, model_bytes)
    atomic_write(Path(f"{model_prefix}.vocab"), _vocab_text(tok).encode("utf-8"))
    tok.path = str(model_path)
    logger.info(
        "trained tokenizer %s (vocab %d, sha256 %s)", model_path, tok.vocab_size, tok.sha256[:12]
    )
    return tok


def _vocab_error(exc: RuntimeError, vocab_size: int) -> Exception:
    """Turn SentencePiece's vocabulary-size failures into a TokenizerError with advice."""
    msg = str(exc)
    high = re.search(r"Vocabulary size too high.*?<= (\d+)", msg)
    if high:
        return TokenizerError(
            f"vocab_size={vocab_size} is too large for this corpus; "
            f"use a smaller one (at most {high.group(1)}) or more text"
        )
    low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", msg)
    if low:
        return TokenizerError(
            f"vocab_size={vocab_size} is too small: the special, byte-fallback and "
            f"character pieces alone need {low.group(1)}; use a larger one"
        )
    return TokenizerError(f"SentencePiece training failed: {msg}")


def _vocab_text(tok: Tokenizer) -> str:
    """Human-readable ``piece<TAB>score`` lines; newlines/tabs in pieces escaped."""
    lines = []
    for i in range(tok.vocab_size):
        piece = tok.id_to_piece(i).replace("\t", "\\t").replace("\n", "\\n")
        lines.append(f"{piece}\t{tok._sp.GetScore(i):g}\n")
    return "".join(lines)
