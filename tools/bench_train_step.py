"""Time mindxh's train step (forward + backward + AdamW) in GRAPH and PYNATIVE mode.

    python tools/bench_train_step.py [RECIPE] [--set key=value ...] [--steps 20] [--pynative-steps 5]

Builds the recipe's model with the package's own cells (`build_model`, `LossCell`, `AdamW`,
`TrainStep`, `runtime.configure`) and feeds random token batches of the recipe's shape
(train.batch_size x train.seq_len). MindSpore's execution mode is process-wide, so each mode
runs in its own child process. Reported per mode: the first step (graph compilation included),
the median of the following steps, and tokens/s at that median. Gradient accumulation and
data parallelism are not exercised: one `TrainStep` on one process.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "pretrain.yaml"
MARK = "BENCH_RESULT "


def child(args) -> dict:
    """One mode in this process: build, compile (first step), then time `args.steps` steps."""
    import mindspore as ms
    import numpy as np

    from mindxh.config import load_recipe
    from mindxh.models.accounting import count_parameters
    from mindxh.models.llama.model import LossCell, build_model
    from mindxh.train import runtime
    from mindxh.train.optim import AdamW
    from mindxh.train.step import TrainStep

    r = load_recipe(args.recipe, args.set)
    r.compile.mode = args.child
    r.parallel.data_parallel = 1
    if r.model.vocab_size is None:
        r.model.vocab_size = args.vocab
    runtime.configure(r)
    model = build_model(r.model, r.seed)
    step = TrainStep(LossCell(model), AdamW(model.trainable_params(), r.optim, r.train.max_steps))
    b, s = r.train.batch_size, r.train.seq_len
    rng = np.random.default_rng(0)
    batches = [ms.Tensor(rng.integers(0, r.model.vocab_size, (b, s + 1), dtype=np.int32))
               for _ in range(4)]

    def one(i: int) -> float:
        rows = batches[i % len(batches)]
        t0 = time.perf_counter()
        loss = step(rows[:, :-1], rows[:, 1:])[0]
        float(loss.asnumpy())  # wait for the step to finish
        return time.perf_counter() - t0

    first = one(0)
    times = [one(i) for i in range(1, args.steps + 1)]
    med = statistics.median(times)
    return {"mode": args.child, "first_s": first, "median_ms": 1e3 * med, "tokens_per_s": b * s / med,
            "steps": args.steps, "batch": b, "seq_len": s, "vocab": r.model.vocab_size,
            "params": count_parameters(model)["total"]}


def run_mode(args, mode: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, str(args.recipe), "--child", mode, "--steps", str(steps),
           "--vocab", str(args.vocab)] + [f"--set={o}" for o in args.set]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    sys.exit(f"{mode} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", nargs="?", default=str(DEFAULT_RECIPE))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--steps", type=int, default=20, help="timed graph-mode steps after the first")
    p.add_argument("--pynative-steps", type=int, default=5, help="timed PyNative steps after the first")
    p.add_argument("--vocab", type=int, default=512, help="vocabulary when model.vocab_size is null")
    p.add_argument("--modes", default="graph,pynative")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.add_argument("--child", choices=["graph", "pynative"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(MARK + json.dumps(child(args)), flush=True)
        return

    from mindxh.config import RecipeError, load_recipe
    try:
        load_recipe(args.recipe, args.set)  # fail here, not in a child's traceback
    except (RecipeError, OSError) as exc:
        sys.exit(f"error: {exc}")
    steps = {"graph": args.steps, "pynative": args.pynative_steps}
    res = {m: run_mode(args, m, steps[m]) for m in args.modes.split(",")}
    any_r = next(iter(res.values()))
    print(f"{Path(args.recipe).name}: {any_r['params']:,} parameters, batch {any_r['batch']} x seq "
          f"{any_r['seq_len']}, vocab {any_r['vocab']} (random tokens), fp32")
    print(f"{'mode':<9} {'first step (s)':>14} {'median step (ms)':>16} {'tokens/s':>10} {'steps':>6}")
    for r in res.values():
        print(f"{r['mode']:<9} {r['first_s']:>14.2f} {r['median_ms']:>16.1f} "
              f"{r['tokens_per_s']:>10,.0f} {r['steps']:>6}")
    if "graph" in res and "pynative" in res:
        print(f"graph / pynative speed: {res['graph']['tokens_per_s'] / res['pynative']['tokens_per_s']:.2f}x")
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
