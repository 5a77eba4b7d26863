"""A Hugging Face `tokenizer.json` (the `tokenizers` library) behind mindxh's tokenizer interface.

Llama 3 and Qwen ship only a `tokenizer.json`, so a converted model needs it to train,
generate and evaluate. The class mirrors `mindxh.tokenizer.spm.Tokenizer` (encode/decode,
bos/eos/pad ids, piece lookups, vocab_size, sha256, path). tokenizer.json does not say which
token is BOS or EOS; that is read from a `tokenizer_config.json` beside it (as transformers
does), else guessed from well-known names. Ids that do not exist are -1, like SentencePiece's.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from mindxh.errors import MindxhError, MissingFileError

__all__ = ["JsonTokenizer"]

_BOS_GUESSES = ("<s>", "<|begin_of_text|>", "<bos>", "<|endoftext|>")
_EOS_GUESSES = ("</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>")
_REASONING = ("<think>", "</think>", "<answer>", "</answer>")


class JsonTokenizerError(MindxhError, ValueError):
    """A file that is not a usable tokenizer.json."""


def _special(config: dict, key: str) -> str | None:
    value = config.get(key)
    if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


class JsonTokenizer:
    """A loaded tokenizer.json plus the ids the training code needs."""

    def __init__(self, data: bytes, path: str | None = None,
                 special_tokens: dict | None = None) -> None:
        from tokenizers import Tokenizer as _HFTokenizer

        try:
            self._tok = _HFTokenizer.from_str(data.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001  (tokenizers raises a plain Exception)
            where = path or "<bytes>"
            raise JsonTokenizerError(f"{where} is not a tokenizer.json: {exc}") from None
        self.path = path
        self.sha256 = hashlib.sha256(data).hexdigest()
        config = special_tokens or {}
        self.bos_id = self._first(_special(config, "bos_token"), *_BOS_GUESSES)
        self.eos_id = self._first(_special(config, "eos_token"), *_EOS_GUESSES)
        self.pad_id = self._first(_special(config, "pad_token"))
        self.unk_id = self._first(_special(config, "unk_token"), "<unk>")
        ids = [self.piece_to_id(p) for p in _REASONING]
        self.think_id, self.think_end_id, self.answer_id, self.answer_end_id = (
            i if i >= 0 else None for i in ids)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "JsonTokenizer":
        """Read `path`, and `tokenizer_config.json` beside it for the special tokens."""
        p = Path(path)
        if not p.is_file():
            raise MissingFileError(f"tokenizer file not found: {p}")
        config_path = p.with_name("tokenizer_config.json")
        config = {}
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise JsonTokenizerError(f"{config_path}: not valid JSON: {exc}") from None
        return cls(p.read_bytes(), path=str(p), special_tokens=config)

    def _first(self, *pieces: str | None) -> int:
        for piece in pieces:
            if piece is not None and self.piece_to_id(piece) >= 0:
                return self.piece_to_id(piece)
        return -1

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def piece_to_id(self, piece: str) -> int:
        token_id = self._tok.token_to_id(piece)
        return -1 if token_id is None else int(token_id)

    def id_to_piece(self, token_id: int) -> str:
        piece = self._tok.id_to_token(int(token_id))
        if piece is None:
            raise IndexError(f"token id {token_id} is outside the vocabulary")
        return piece

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of `text`; the tokenizer's own post-processing (e.g. an automatic BOS) is off,
        so `bos`/`eos` alone decide, as with the SentencePiece class."""
        ids = list(self._tok.encode(text, add_special_tokens=False).ids)
        if bos and self.bos_id >= 0:
            ids.insert(0, self.bos_id)
        if eos and self.eos_id >= 0:
            ids.append(self.eos_id)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text (no bos/eos) in one call, as `Tokenizer.encode_batch`. It uses threads
        unless TOKENIZERS_PARALLELISM=false, which `data prepare`'s worker processes set."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; special tokens (bos/eos/pad...) are dropped, as SentencePiece does."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return (f"JsonTokenizer(vocab_size={self.vocab_size}, sha256={self.sha256[:12]}, "
                f"path={self.path!r})")
