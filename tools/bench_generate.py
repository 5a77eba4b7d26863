"""Time generation in graph mode: the key/value-cached Generator against recomputing the
whole sequence at every step, in the same process, on the same model and prompts.

    python tools/bench_generate.py [--batch 128 --prompt-len 64 --new-tokens 64]
                                   [--hidden 128 --layers 4 --heads 4 --kv-heads 2 --vocab 512]

The model has random weights; decoding is greedy and never stops early (no stop ids), so
both sides produce batch x new-tokens tokens, and the tokens must agree. The peer keeps a
static [batch, prompt + new] token buffer (one compiled graph, like the cache), runs the
Decoder's layers over all of it each step, and takes each row's hidden state at its last
token through the head. Reported: wall time (after a compiling warm-up run), tokens/s.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


class _NoStops:
    eos_id = -1

    def piece_to_id(self, piece: str) -> int:
        return -2

    def decode(self, ids) -> str:
        return ""


def _recompute_cell(model, length: int):
    from mindspore import nn, ops

    class Recompute(nn.Cell):
        """Full causal forward over [B, length]; logits at `last` [B] only."""

        def __init__(self):
            super().__init__(auto_prefix=False)
            self.model = model

        def construct(self, tokens, last):
            m = self.model
            b = tokens.shape[0]
            x = ops.gather(m.embed, tokens, 0)
            cos, sin, mask = m.cos[:length], m.sin[:length], m.causal_mask[:length, :length]
            for layer in m.layers:
                x = layer(x, cos, sin, mask)
            h = x.shape[-1]
            rows = ops.arange(b, dtype=last.dtype) * length + last
            return m.logits(ops.gather(x.reshape(b * length, h), rows, 0))

    return Recompute()


def run_cached(gen, prompts, new_tokens: int) -> tuple[float, np.ndarray]:
    from mindxh.generate import SamplingConfig

    t0 = time.perf_counter()
    out = gen.generate(prompts, SamplingConfig(max_new_tokens=new_tokens, temperature=0.0))
    return time.perf_counter() - t0, np.array([c.ids for c in out])


def run_recompute(cell, prompts: np.ndarray, new_tokens: int) -> tuple[float, np.ndarray]:
    import mindspore as ms

    b, p = prompts.shape
    buf = np.zeros((b, p + new_tokens), np.int32)
    buf[:, :p] = prompts
    t0 = time.perf_counter()
    for step in range(new_tokens):
        last = np.full(b, p + step - 1, np.int32)
        logits = cell(ms.Tensor(buf), ms.Tensor(last)).asnumpy()
        buf[:, p + step] = logits.argmax(-1)
    return time.perf_counter() - t0, buf[:, p:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="timed cached runs (median)")
    args = ap.parse_args()

    import mindspore as ms

    from mindxh.config.schema import ModelConfig
    from mindxh.generate import Generator
    from mindxh.models.llama.model import build_model

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    total = args.prompt_len + args.new_tokens
    cfg = ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                      num_heads=args.heads, num_kv_heads=args.kv_heads,
                      intermediate_size=3 * args.hidden, max_seq_len=total, init_std=0.1)
    model = build_model(cfg, seed=0)
    rng = np.random.default_rng(0)
    prompts = rng.integers(4, args.vocab, (args.batch, args.prompt_len)).astype(np.int32)
    tokens = args.batch * args.new_tokens
    print(f"model d{args.hidden} x {args.layers} layers, heads {args.heads}/{args.kv_heads}, vocab "
          f"{args.vocab}; batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens "
          f"(greedy, fp32, graph mode)")

    gen = Generator(model, _NoStops(), args.batch, total)
    as_lists = prompts.tolist()
    first, cached_ids = run_cached(gen, as_lists, args.new_tokens)  # compiles prefill and decode
    times, stats = [], []
    for _ in range(args.repeats):
        times.append(run_cached(gen, as_lists, args.new_tokens)[0])
        stats.append(gen.last_stats)
    cached_s = statistics.median(times)
    s = stats[times.index(cached_s)]

    cell = _recompute_cell(model, total)
    t0 = time.perf_counter()
    cell(ms.Tensor(np.zeros((args.batch, total), np.int32)), ms.Tensor(np.zeros(args.batch, np.int32)))
    peer_first = time.perf_counter() - t0
    peer_s, peer_ids = run_recompute(cell, prompts, args.new_tokens)

    same = float(np.mean(cached_ids == peer_ids))
    print(f"{'method':<22}{'compile (s)':>12}{'wall (s)':>10}{'tokens/s':>11}")
    print(f"{'kv cache':<22}{first - cached_s:>12.2f}{cached_s:>10.2f}{tokens / cached_s:>11,.0f}"
          f"   (prefill {s.prefill_s:.2f}s, {1e3 * s.decode_s / max(s.decode_steps, 1):.1f} ms a decode step with sampling)")
    print(f"{'recompute each step':<22}{peer_first - peer_s / args.new_tokens:>12.2f}{peer_s:>10.2f}{tokens / peer_s:>11,.0f}")
    print(f"kv cache / recompute speed: {peer_s / cached_s:.1f}x; same tokens: {same:.1%}")


if __name__ == "__main__":
    main()
