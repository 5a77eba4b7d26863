"""Batched generation with a key/value cache: prompts in, completions out.

    prompts -> chunks of `batch_size` (last one padded) -> prefill (the prompt block)
            -> decode one token per row per step -> host-side sampling -> stop per row

The host loop (`BatchGenerator`: chunking, padding, sampling, stop tokens, statistics) talks
to the model only through a `StepBackend`: `prefill` and `decode`, each returning logits.
`Generator` runs a compiled `CachedDecoder` over a live model (checkpoints, evaluation,
GRPO); `mindxh.generate.mindir` runs the exported MindIR graphs. One loop for both is what
makes `generate --mindir` give the same tokens as `generate --checkpoint`.

The compiled cell has static shapes: the batch is always `batch_size` rows, the cache
always `max_len - 1` columns (the last token of a sequence is never fed back), and the
prompt block is rounded up to a multiple of `prompt_bucket`, so a run compiles the decode
step once and the prefill once per bucket. Rows keep their own positions, so a prompt's
result does not depend on its neighbours in the batch.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mindxh.errors import MindxhError
from mindxh.generate.sampling import SamplingConfig, log_probs, row_rngs, sample

__all__ = ["BatchGenerator", "CellBackend", "Completion", "GenerationError", "GenerationStats",
           "Generator", "StepBackend"]

log = logging.getLogger(__name__)


class GenerationError(MindxhError, ValueError):
    """Prompts the generator cannot take (too long for max_len, empty, ids out of vocabulary)."""


@dataclass
class Completion:
    ids: list[int]  # new tokens, the stop token included
    text: str  # the new tokens decoded
    finish_reason: str  # "eos" | "stop" (</answer>) | "length"
    logprobs: list[float]  # log softmax(raw logits)[token] per new token (temperature 1)


@dataclass
class GenerationStats:
    """Speed of the last `generate` call (first calls include graph compilation)."""

    prompts: int = 0
    chunks: int = 0
    new_tokens: int = 0  # tokens kept in completions
    decode_steps: int = 0  # one-token steps of the whole batch
    decode_rows: int = 0  # rows those steps ran (a dynamic backend's last chunk may be smaller)
    prefill_s: float = 0.0
    decode_s: float = 0.0  # decode steps and host-side sampling
    batch_size: int = 0

    @property
    def wall_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens per second of generation (padding rows and finished rows excluded)."""
        return self.new_tokens / self.wall_s if self.wall_s else 0.0

    @property
    def decode_rows_per_s(self) -> float:
        """Row-tokens the decode step processes per second (every row, finished or not)."""
        return self.decode_rows / self.decode_s if self.decode_s else 0.0


def _check_sizes(batch_size: int, max_len: int, prompt_bucket: int) -> None:
    if batch_size < 1 or max_len < 2 or prompt_bucket < 1:
        raise GenerationError(f"need batch_size >= 1, max_len >= 2 and prompt_bucket >= 1; got "
                              f"{batch_size}, {max_len}, {prompt_bucket}")


class StepBackend(Protocol):
    """One model step, however it runs. `prefill` starts fresh caches for a chunk; `decode`
    continues them. Both return logits [B, V] as NumPy. `batch_size` is the row count every
    call must have (a static graph), or None where any batch size works."""

    batch_size: int | None

    def prefill(self, tokens: np.ndarray, positions: np.ndarray, last: np.ndarray) -> np.ndarray:
        """tokens/positions [B, W] (the padded prompt block), last [B]: the index of each
        row's last prompt token, whose logits are returned."""

    def decode(self, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """tokens/positions [B, 1]: one new token per row."""


class CellBackend:
    """A compiled `CachedDecoder` (caches held as Parameters, updated in place)."""

    def __init__(self, cell):
        self.cell, self.batch_size = cell, cell.batch_size

    def prefill(self, tokens, positions, last):
        import mindspore as ms

        return self.cell.prefill(ms.Tensor(tokens), ms.Tensor(positions), ms.Tensor(last)).asnumpy()

    def decode(self, tokens, positions):
        import mindspore as ms

        return self.cell.decode(ms.Tensor(tokens), ms.Tensor(positions)).asnumpy()


class BatchGenerator:
    """Generates from a `StepBackend` in chunks of up to `batch_size` prompts.

    `max_len` bounds prompt + completion tokens (the backend's cache holds `max_len - 1`).
    """

    def __init__(self, backend: StepBackend, tokenizer, batch_size: int, max_len: int,
                 prompt_bucket: int, vocab_size: int):
        _check_sizes(batch_size, max_len, prompt_bucket)
        self.backend, self.tokenizer = backend, tokenizer
        self.batch_size, self.max_len, self.prompt_bucket = batch_size, max_len, prompt_bucket
        self.vocab_size = vocab_size
        # a model vocabulary padded past the tokenizer's (converted Qwen models, or a recipe's
        # larger model.vocab_size) has ids no text decodes to: they are never sampled
        self.sampled_vocab = min(vocab_size, tokenizer.vocab_size)
        # `</answer>` ends a reasoning answer; a tokenizer without that piece (answer_end_id
        # None) stops at eos only, never at the id its piece_to_id gives unknown pieces
        self.stop_ids = {tokenizer.eos_id: "eos"}
        if tokenizer.answer_end_id is not None:
            self.stop_ids[tokenizer.answer_end_id] = "stop"
        self.last_stats = GenerationStats(batch_size=batch_size)

    # -- public ---------------------------------------------------------------
    def greedy(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[Completion]:
        """Greedy completions (temperature 0): what accuracy is judged on."""
        return self.generate(prompts, SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0))

    def generate(self, prompts: Sequence[Sequence[int]], cfg: SamplingConfig) -> list[Completion]:
        """One completion per prompt, in order. Prompts of similar length share a chunk."""
        self._check(prompts, cfg)
        stats = GenerationStats(prompts=len(prompts), batch_size=self.batch_size)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Completion | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            indices = order[start:start + self.batch_size]
            chunk = self._run_chunk([prompts[i] for i in indices], indices, cfg, stats)
            for i, completion in zip(indices, chunk):
                results[i] = completion
            stats.chunks += 1
        self.last_stats = stats
        log.debug("generated %d tokens for %d prompts in %.2fs (prefill %.2fs): %.0f tokens/s, "
                  "decode %.0f row-tokens/s", stats.new_tokens, stats.prompts, stats.wall_s,
                  stats.prefill_s, stats.tokens_per_s, stats.decode_rows_per_s)
        return results

    # -- internals -------------------------------------------------------------
    def _check(self, prompts, cfg: SamplingConfig) -> None:
        limit = self.max_len - cfg.max_new_tokens
        if limit < 1:
            raise GenerationError(f"max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt "
                                  f"within max_len={self.max_len}")
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise GenerationError(f"prompt {i} is empty (it needs at least a <s> token)")
            if len(p) > limit:
                raise GenerationError(f"prompt {i} has {len(p)} tokens; with max_new_tokens="
                                      f"{cfg.max_new_tokens} and max_len={self.max_len} at most "
                                      f"{limit} fit")
            low, high = min(p), max(p)
            if low < 0 or high >= self.vocab_size:
                raise GenerationError(f"prompt {i} holds token id {low if low < 0 else high}, outside "
                                      f"the model's vocabulary [0, {self.vocab_size})")

    def _prefill(self, prompts: list[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(logits after each prompt's last token, prompt lengths); rows beyond the prompts
        (a static backend's padding) are 1-token prompts."""
        b = self.backend.batch_size or len(prompts)
        longest = max(len(p) for p in prompts)
        width = min(-(-longest // self.prompt_bucket) * self.prompt_bucket, self.max_len - 1)
        block = np.zeros((b, width), np.int32)
        lengths = np.ones(b, np.int32)
        for row, p in enumerate(prompts):
            block[row, :len(p)] = p
            lengths[row] = len(p)
        positions = np.broadcast_to(np.arange(width, dtype=np.int32), (b, width)).copy()
        return self.backend.prefill(block, positions, lengths - 1), lengths

    def _run_chunk(self, prompts, indices, cfg: SamplingConfig, stats: GenerationStats):
        n, b = len(prompts), self.backend.batch_size or len(prompts)
        t0 = time.perf_counter()
        logits, positions = self._prefill(prompts)
        stats.prefill_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        rngs = None if cfg.greedy else row_rngs(cfg.seed, indices)
        ids = [[] for _ in range(n)]
        lps = [[] for _ in range(n)]
        reasons = ["length"] * n
        active = np.ones(n, bool)
        feed = np.zeros((b, 1), np.int32)
        for step in range(cfg.max_new_tokens):
            rows = logits[:n]
            uniforms = None if rngs is None else np.array([g.random() for g in rngs])
            tokens = sample(rows[:, :self.sampled_vocab], cfg, uniforms)
            chosen_lp = log_probs(rows, tokens)  # under the model's whole distribution
            for r in np.flatnonzero(active):
                token = int(tokens[r])
                ids[r].append(token)
                lps[r].append(float(chosen_lp[r]))
                if token in self.stop_ids:
                    reasons[r] = self.stop_ids[token]
                    active[r] = False
            if step == cfg.max_new_tokens - 1 or not active.any():
                break
            feed[:n, 0] = tokens  # finished and padding rows run on; their outputs are ignored
            logits = self.backend.decode(feed, positions.reshape(b, 1))
            positions += 1
            stats.decode_steps += 1
            stats.decode_rows += b
        stats.decode_s += time.perf_counter() - t0
        stats.new_tokens += sum(len(x) for x in ids)
        return [Completion(ids=i, text=self.tokenizer.decode(i), finish_reason=reason, logprobs=lp)
                for i, lp, reason in zip(ids, lps, reasons)]


class Generator(BatchGenerator):
    """Generates from `model` (a Decoder, weights shared, never copied) through a compiled
    `CachedDecoder` of `batch_size` rows.

    `max_len` bounds prompt + completion tokens; it may exceed the model's `max_seq_len` by one.
    `window`: decoded tokens held in a cache.RecentWindow before they join the cache (0: none);
    None lets `decode_window` choose from the cache's size (16 for large caches, else 0).
    """

    def __init__(self, model, tokenizer, batch_size: int, max_len: int, prompt_bucket: int = 32,
                 window: int | None = None):
        _check_sizes(batch_size, max_len, prompt_bucket)  # before building a cache of that size
        if max_len - 1 > model.cfg.max_seq_len:
            raise GenerationError(f"max_len={max_len} needs positions up to {max_len - 2}, beyond the "
                                  f"model's max_seq_len={model.cfg.max_seq_len}; use max_len <= "
                                  f"{model.cfg.max_seq_len + 1}")
        from mindxh.models.llama.cache import CachedDecoder, decode_window  # imports mindspore

        cfg = model.cfg
        if window is None:
            window = decode_window(batch_size, cfg.num_kv_heads, max_len - 1, cfg.head_dim)
        self.cell = CachedDecoder(model, batch_size, max_len - 1, min(window, max_len - 1))
        super().__init__(CellBackend(self.cell), tokenizer, batch_size, max_len, prompt_bucket,
                         model.cfg.vocab_size)
