"""Worker side of ``mindxh data prepare``: a chunk of input bytes in, token arrays out.

Runs in worker processes (or in the main process with ``workers=0``). Everything slow
and per-record lives here: UTF-8 decoding, JSON parsing, validation and tokenising.
Pretraining text goes through the tokenizer's batch encoder in one call per chunk, and
the result travels back as two numpy arrays, not millions of Python ints.

A worker receives the tokenizer object the parent loaded (SentencePiece or a Hugging Face
tokenizer.json, pickled with its model), not its path: the file is read once, by the
parent, so the tokens come from exactly the file whose sha256 the manifest records.

Imports no MindSpore, so a spawned worker starts in a fraction of a second.
"""
from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from mindxh.data.chat import ChatFormatError, render_chat
from mindxh.data.readers import Chunk, Skip, classify_chat_error, parse_chunk
from mindxh.tokenizer.spm import Tokenizer
from mindxh.utils.fsio import pid_alive

__all__ = ["ChunkEncoder", "Encoded", "encode_chunk", "init_worker"]


@dataclass
class Encoded:
    """The documents of one chunk, in input order: ``tokens`` is every document's ids
    concatenated, ``lengths`` their lengths, ``masks`` (SFT) the loss masks likewise."""

    source: int
    nbytes: int
    tokens: np.ndarray
    lengths: np.ndarray
    masks: np.ndarray | None = None
    skips: list[tuple[str, int, str]] = field(default_factory=list)  # (reason, line, detail)


class ChunkEncoder:
    """Turns chunks into :class:`Encoded`; pretraining documents become ``<s> text </s>``."""

    def __init__(self, tok: Tokenizer, kind: str, seq_len: int, max_doc_chars: int):
        self.tok = tok
        self.kind, self.seq_len, self.max_doc_chars = kind, seq_len, max_doc_chars

    def __call__(self, chunk: Chunk) -> Encoded:
        skips: list[tuple[str, int, str]] = []
        records = []
        for line, value in parse_chunk(chunk, self.kind, self.max_doc_chars):
            if isinstance(value, Skip):
                skips.append((value.reason, line, value.detail))
            else:
                records.append((line, value))
        if self.kind == "pretrain":
            out = self._pretrain([v for _, v in records], [ln for ln, _ in records], skips)
        else:
            out = self._sft(records, skips)
        out.source, out.nbytes = chunk.source, chunk.nbytes
        out.skips.sort(key=lambda s: s[1])
        return out

    def _pretrain(self, texts: list[str], lines: list[int], skips: list) -> Encoded:
        try:
            ids = self.tok.encode_batch(texts)
        except (UnicodeError, TypeError, RuntimeError):  # a lone surrogate from a JSON \\ud800 escape
            ids = []
            for text, line in zip(texts, lines):
                try:
                    ids.append(self.tok.encode(text))
                except (UnicodeError, TypeError, RuntimeError):
                    skips.append(("undecodable", line, "text is not valid Unicode (lone surrogate)"))
        content = np.fromiter(map(len, ids), np.int64, count=len(ids))
        lengths = content + 2
        flat = np.fromiter(itertools.chain.from_iterable(ids), np.int32, count=int(content.sum()))
        tokens = np.empty(int(lengths.sum()), np.int32)
        starts = np.cumsum(lengths) - lengths
        body = np.ones(tokens.shape[0], bool)
        body[starts] = False
        body[starts + lengths - 1] = False
        tokens[starts] = self.tok.bos_id
        tokens[starts + lengths - 1] = self.tok.eos_id
        tokens[body] = flat
        return Encoded(0, 0, tokens, lengths, None, skips)

    def _sft(self, records: list, skips: list) -> Encoded:
        all_ids, all_masks = [], []
        for line, sample in records:
            try:
                ids, mask = render_chat(self.tok, sample)
            except ChatFormatError as exc:
                skips.append((classify_chat_error(str(exc)), line, str(exc)))
                continue
            except (UnicodeError, TypeError, RuntimeError):
                skips.append(("undecodable", line, "text is not valid Unicode (lone surrogate)"))
                continue
            if ids.shape[0] - 1 > self.seq_len:
                skips.append(("too_long", line, f"sample of {ids.shape[0]} tokens does not fit a "
                                                f"{self.seq_len}-token row"))
                continue
            all_ids.append(ids)
            all_masks.append(mask.astype(np.int8))
        lengths = np.fromiter(map(len, all_ids), np.int64, count=len(all_ids))
        tokens = np.concatenate(all_ids) if all_ids else np.zeros(0, np.int32)
        masks = np.concatenate(all_masks) if all_masks else np.zeros(0, np.int8)
        return Encoded(0, 0, tokens.astype(np.int32, copy=False), lengths, masks, skips)


_ENCODER: ChunkEncoder | None = None


def init_worker(tok: Tokenizer, kind: str, seq_len: int, max_doc_chars: int, parent: int) -> None:
    """Pool initializer: build this process's encoder; exit if the parent dies (a killed
    ``prepare`` must not leave workers behind); leave Ctrl-C to the parent."""
    global _ENCODER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the worker processes already share the CPUs
    _ENCODER = ChunkEncoder(tok, kind, seq_len, max_doc_chars)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    direct = os.getppid() == parent  # spawn, fork; under forkserver the parent is the server
    while os.getppid() == parent if direct else pid_alive(parent):
        time.sleep(0.5)
    os._exit(1)


def encode_chunk(chunk: Chunk) -> Encoded:
    assert _ENCODER is not None, "init_worker was not called"
    return _ENCODER(chunk)
