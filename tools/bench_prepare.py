"""Benchmark `mindxh data prepare` against its peers, on a generated corpus (no network).

    python tools/bench_prepare.py [--mb 50] [--vocab-size 8000] [--seq-len 2048] [--workers 2]

1. Generates ~``--mb`` MB of JSONL: English-like documents of pseudo-words drawn with
   Zipf frequencies from a fixed 30k-word vocabulary, with sentences and punctuation.
2. Trains a BPE tokenizer on the first 3,000 documents (``--tokenizer`` to use one).
3. Prints, for the same text and tokenizer:
   * SentencePiece's raw batch encode on one core (the peer: tokenising is the work);
   * MindRecord FileWriter's rows/s through our ShardWriter at this seq_len;
   * ``prepare(workers=W)``: input tokens/s, wall clock from the call to its return
     (worker start-up and the MindSpore import included).

Figures on a shared machine are noisy: the load average is printed with them.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_ONSETS = ("", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v",
           "w", "y", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gr", "pl", "pr", "sh", "sl",
           "sp", "st", "str", "th", "tr", "wh")
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou", "ie", "y")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "d", "ng", "nd", "st", "ck", "ll", "ss",
          "nt", "rt", "th")


@functools.lru_cache(maxsize=None)
def vocabulary(n: int = 30000, seed: int = 1234) -> np.ndarray:
    """``n`` distinct pseudo-words, shortest first (the frequent ones are short, as in English)."""
    rng = np.random.default_rng(seed)
    words: set[str] = set()
    while len(words) < n:
        syllables = int(rng.choice([1, 1, 1, 2, 2, 2, 3, 3, 4]))
        words.add("".join(_ONSETS[rng.integers(len(_ONSETS))] + _NUCLEI[rng.integers(len(_NUCLEI))]
                          + _CODAS[rng.integers(len(_CODAS))] for _ in range(syllables)))
    vocab = np.array(sorted(words, key=lambda w: (len(w), w)), dtype=object)
    vocab.flags.writeable = False
    return vocab


def documents(n: int, seed: int = 0) -> list[str]:
    """``n`` documents of 40-600 words; ~7% of words end a sentence, ~5% carry a comma."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1) ** 1.05)
    cdf /= cdf[-1]
    sizes = rng.integers(40, 600, n)
    words = vocab[np.minimum(np.searchsorted(cdf, rng.random(int(sizes.sum()))), len(vocab) - 1)]
    u = rng.random(words.shape[0])
    ends = u < 0.07
    words[ends] = words[ends] + np.where(u[ends] < 0.056, ".", np.where(u[ends] < 0.063, "?", "!"))
    commas = (u >= 0.07) & (u < 0.12)
    words[commas] = words[commas] + ","
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    caps = np.zeros(words.shape[0], bool)
    caps[np.flatnonzero(ends[:-1]) + 1] = True
    caps[starts] = True
    words[caps] = [w.capitalize() for w in words[caps]]
    return [" ".join(words[s:s + k].tolist()) + "." for s, k in zip(starts, sizes)]


def write_corpus(path: Path, mb: float) -> list[str]:
    docs: list[str] = []
    size, seed = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < mb * 1e6:
            batch = documents(2000, seed)
            seed += 1
            for d in batch:
                line = json.dumps({"text": d}) + "\n"
                f.write(line)
                size += len(line)
                docs.append(d)
                if size >= mb * 1e6:
                    break
    return docs


def bench_sentencepiece(model: Path, texts: list[str]) -> tuple[float, float, int, float]:
    """Raw SentencePiece batch encode, one thread: (tokens/s wall, tokens per CPU-second,
    tokens, chars per token)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    t, c = time.perf_counter(), time.process_time()
    ids = sp.encode(texts, out_type=int, num_threads=1)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    n = sum(map(len, ids))
    return n / dt, n / dc, n, sum(map(len, texts)) / n


def _encode_slice(args: tuple[str, list[str]]) -> int:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=args[0])
    return sum(map(len, sp.encode(args[1], out_type=int, num_threads=1)))


def cores_available(model: Path, texts: list[str], workers: int) -> float:
    """How many cores this run really gets now: ``workers`` processes encoding the same
    slice at once, against one alone (a shared machine may give two processes one core)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    job = (str(model), texts)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(int, range(workers)))
        t = time.perf_counter()
        pool.submit(_encode_slice, job).result()
        one = time.perf_counter() - t
        t = time.perf_counter()
        list(pool.map(_encode_slice, [job] * workers))
        return workers * one / (time.perf_counter() - t)


def bench_filewriter(seq_len: int, rows: int, directory: Path) -> tuple[float, float]:
    """Rows/s through ShardWriter (MindRecord FileWriter) alone, random rows: (wall, CPU)."""
    from mindxh.data.shard_writer import ShardWriter

    rng = np.random.default_rng(0)
    a = rng.integers(3, 8000, (rows, seq_len), dtype=np.int32)
    writer = ShardWriter(directory, seq_len, rows_per_shard=rows)  # imports MindSpore: not timed
    t, c = time.perf_counter(), time.process_time()
    for i in range(0, rows, 256):
        writer.write(a[i:i + 256], a[i:i + 256], a[i:i + 256])
    writer.close()
    return rows / (time.perf_counter() - t), rows / (time.process_time() - c)


def _cpu_seconds() -> tuple[float, float]:
    """(this process, its finished children): user + system CPU seconds."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--tokenizer", help="use this .model instead of training one")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--filewriter-seq-lens", default="128,512,2048",
                    help="also time FileWriter alone at these seq_lens")
    ap.add_argument("--start-method", default="spawn", choices=("spawn", "fork", "forkserver"))
    ap.add_argument("--workdir", help="keep files here (default: a temporary folder)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    logging.getLogger("mindspore").setLevel(logging.ERROR)

    from mindxh.data.prepare import prepare
    from mindxh.tokenizer import train_from_texts

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        corpus = work / f"corpus-{args.mb:g}mb.jsonl"
        t = time.perf_counter()
        if corpus.is_file():  # --workdir kept from an earlier run
            texts = [json.loads(line)["text"] for line in corpus.open(encoding="utf-8")]
        else:
            texts = write_corpus(corpus, args.mb)
        print(f"corpus: {corpus.stat().st_size / 1e6:.1f} MB, {len(texts):,} documents "
              f"({time.perf_counter() - t:.1f} s to generate)")
        model = Path(args.tokenizer) if args.tokenizer else None
        if model is None:
            t = time.perf_counter()
            model = Path(train_from_texts(texts[:3000], work / "tok", args.vocab_size).path)
            print(f"tokenizer: BPE vocab {args.vocab_size} trained in {time.perf_counter() - t:.1f} s")
        sp_rate, sp_cpu_rate, sp_tokens, cpt = bench_sentencepiece(model, texts)
        print(f"sentencepiece encode, 1 core: {sp_rate / 1e6:.2f} M tokens/s, {sp_cpu_rate / 1e6:.2f} M "
              f"tokens per CPU-second ({sp_tokens:,} tokens, {cpt:.2f} chars/token)")
        probe = cores_available(model, texts[:3000], args.workers)
        print(f"cores available now: {probe:.2f} of {args.workers} ({args.workers} processes of "
              "sentencepiece at once vs one alone)")
        del texts
        for seq_len in sorted({args.seq_len, *map(int, args.filewriter_seq_lens.split(","))}):
            fw_rows = max(200, min(20000, (64 << 20) // (12 * seq_len)))
            fw, fw_cpu = bench_filewriter(seq_len, fw_rows, work)
            print(f"FileWriter (ShardWriter), seq_len {seq_len}: {fw:,.0f} rows/s = "
                  f"{fw * seq_len / 1e6:.2f} M tokens/s of rows ({fw_cpu:,.0f} rows per CPU-second)")
            for f in work.glob("shard-*"):
                f.unlink()
        out = work / "prepared"
        shutil.rmtree(out, ignore_errors=True)
        cpu0 = _cpu_seconds()
        t = time.perf_counter()
        m = prepare([corpus], out, model, kind="pretrain", seq_len=args.seq_len,
                    workers=args.workers, progress=False, start_method=args.start_method)
        dt = time.perf_counter() - t
        main_cpu, child_cpu = (b - a for a, b in zip(cpu0, _cpu_seconds()))
        rate = m["tokens"] / dt
        print(f"prepare, {args.workers} workers ({args.start_method}): {rate / 1e6:.2f} M tokens/s "
              f"({m['tokens']:,} tokens, {m['rows']:,} rows, {dt:.1f} s wall) = "
              f"{rate / sp_rate:.2f}x sentencepiece on one core")
        print(f"  CPU time: main process {main_cpu:.1f} s, workers {child_cpu:.1f} s; "
              f"{m['tokens'] / (main_cpu + child_cpu) / 1e6:.2f} M tokens per CPU-second "
              f"(sentencepiece alone: {sp_cpu_rate / 1e6:.2f})")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
