"""`mindxh bench`: mindxh against its peers, side by side, in one invocation.

    mindxh bench [--configs tiny,medium,small] [--repeats 3] [--steps 10] [--warmup 3]
                 [--only train,generate,grpo] [--peers mindxh-graph,...] [--out runs/bench]

Train step: mindxh graph mode and PyNative, transformers' LlamaForCausalLM on torch eager
and under torch.compile, mindformers' Llama in graph mode (from .venv-mf when it exists).
Generation: mindxh's cached decoding vs recomputation vs transformers' generate. GRPO: the
tiny X1 stage's step split into sampling, reward and update. Writes OUT/bench.md and
OUT/bench.json (docs/performance.md explains the columns). torch and transformers come
with `pip install -e '.[bench]'`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mindxh.errors import MindxhError

__all__ = ["register", "run"]

X1_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "x1.yaml"


class BenchError(MindxhError, ValueError):
    """Options the benchmark cannot run with."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from mindxh.bench import spec

    p = subparsers.add_parser("bench", help="benchmark mindxh against its peers (train, generate, GRPO)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,medium,small", help=f"of {', '.join(spec.CONFIGS)}")
    p.add_argument("--peers", default=",".join(spec.TRAIN_PEERS), help="train-step peers; "
                   "generation runs mindxh's methods with mindxh-graph, its fused cached decoding with "
                   "mindxh-graph-fused, transformers' with torch-eager")
    p.add_argument("--only", default="train,generate,grpo", help="sections: train, generate, grpo")
    p.add_argument("--repeats", type=int, default=3, help="alternated rounds per peer (processes)")
    p.add_argument("--steps", type=int, default=10, help="timed train steps per round")
    p.add_argument("--pynative-steps", type=int, default=5,
                   help="timed steps per round for mindxh-pynative (at most --steps)")
    p.add_argument("--warmup", type=int, default=3, help="untimed train steps first (compilation)")
    p.add_argument("--gen-batch", default=",".join(map(str, spec.GEN_BATCH)), metavar="B,B")
    p.add_argument("--gen-new", default=",".join(map(str, spec.GEN_NEW)), metavar="N,N",
                   help="new tokens per case")
    p.add_argument("--recompute-cap", type=int, default=16,
                   help="decode steps timed for recomputation (its cost per step is constant)")
    p.add_argument("--grpo-steps", type=int, default=4, help="GRPO steps (the first compiles)")
    p.add_argument("--grpo-recipe", default=str(X1_RECIPE))
    p.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    p.add_argument("--out", default="runs/bench", help="writes OUT/bench.md and OUT/bench.json")
    p.set_defaults(func=run)


def options(args: argparse.Namespace) -> argparse.Namespace:
    """Validated options: lists parsed, counts checked (a BenchError names the option)."""
    from mindxh.bench import spec
    from mindxh.bench.runner import SECTIONS, parse_ints, parse_list

    try:
        opts = argparse.Namespace(**vars(args))
        opts.configs = parse_list(args.configs, tuple(spec.CONFIGS), "--configs")
        opts.peers = parse_list(args.peers, spec.TRAIN_PEERS, "--peers")
        opts.only = parse_list(args.only, SECTIONS, "--only")
        opts.gen_batch = parse_ints(args.gen_batch, "--gen-batch")
        opts.gen_new = parse_ints(args.gen_new, "--gen-new")
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    for name in ("repeats", "steps", "pynative_steps", "warmup", "recompute_cap", "grpo_steps"):
        if getattr(opts, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be >= 1")
    if not Path(opts.grpo_recipe).is_file() and "grpo" in opts.only:
        raise BenchError(f"--grpo-recipe {opts.grpo_recipe} does not exist")
    if not opts.timeout > 0:
        raise BenchError(f"--timeout must be > 0 seconds, got {opts.timeout}")
    out = Path(opts.out).resolve()  # the children run in the repository root, not here
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {opts.out} is a file; the benchmark writes a directory")
    opts.out = str(out)
    return opts


def run(args: argparse.Namespace) -> int:
    from mindxh.bench.runner import run as run_bench
    from mindxh.bench.runner import write

    opts = options(args)
    command = "mindxh bench " + " ".join(
        f"--{k} {','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in (
            ("configs", opts.configs), ("peers", opts.peers), ("only", opts.only),
            ("repeats", opts.repeats), ("steps", opts.steps), ("warmup", opts.warmup),
            ("pynative-steps", opts.pynative_steps), ("recompute-cap", opts.recompute_cap),
            ("grpo-steps", opts.grpo_steps),
            ("gen-batch", opts.gen_batch), ("gen-new", opts.gen_new), ("out", opts.out)))
    result = run_bench(opts, command)
    md, js = write(result, Path(opts.out))
    print(md.read_text(encoding="utf-8"))
    print(f"wrote {md} and {js}", file=sys.stderr)
    return 0
