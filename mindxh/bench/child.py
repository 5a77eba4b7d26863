"""One measurement in its own process: `python -m mindxh.bench.child JOB PARAMS_JSON`.

Why a process per measurement: MindSpore's execution mode is process-wide, torch and
MindSpore should not share thread pools, mindformers needs another venv (another mindspore),
and peak RSS (`ru_maxrss`) is only a framework's own when nothing else ran in its process.
The last stdout line starting with `MARK` carries the result as JSON; anything else a
framework prints is ignored (the parent keeps stderr for the failure message).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

MARK = "BENCH_RESULT "


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_steps(step: Callable[[np.ndarray], float], batches: list[np.ndarray], warmup: int,
               steps: int) -> dict:
    """Run `warmup + steps` steps; `step` must return a host float (so it has finished).
    Warm-up steps (the first one compiles) are reported apart and never enter the medians."""
    times, losses = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        losses.append(float(step(batches[i % len(batches)])))
        times.append(time.perf_counter() - t0)
    return {"first_s": times[0], "warmup_s": times[:warmup], "step_s": times[warmup:],
            "loss_first": losses[0], "loss_last": losses[-1]}


def save_weights(path: str | Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, str(path))


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def job_weights(p: dict) -> dict:
    """mindxh's seeded initial weights for a config, saved for every peer to load: the same
    numbers everywhere, so first-step losses (and greedy tokens) can be compared."""
    from mindxh.bench import spec
    from mindxh.models.llama.model import build_model

    s = spec.shape(p["config"])
    cfg = spec.model_config(s, p.get("max_seq_len"), p.get("init_std", spec.INIT_STD))
    model = build_model(cfg, seed=0)  # PyNative: no compilation, numpy-seeded values
    tensors = {name: param.asnumpy() for name, param in model.parameters_and_names()}
    save_weights(p["out"], tensors)
    return {"tensors": len(tensors), "parameters": int(sum(v.size for v in tensors.values()))}


def job_peak(p: dict) -> dict:
    """The float32 GEMM probe, measured now in every GEMM library this venv has (numpy,
    MindSpore, torch); the fastest is the peak. No cache: an earlier (quieter or busier)
    measurement is never reused."""
    from mindxh.utils.flops import probe_gemm

    rates = probe_gemm(p["size"], p["repeats"], ("numpy", "mindspore", "torch"))
    best = max(rates, key=rates.get)
    each = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in rates.items())
    return {"flops": rates[best], "size": p["size"], "rates": rates,
            "method": f"fastest float32 matmul {p['size']}^3 of numpy {np.__version__} / "
                      f"MindSpore / torch, best of {p['repeats']} each ({each} GFLOP/s; {best} "
                      "fastest)"}


JOBS = {"weights": "child:job_weights", "peak": "child:job_peak",
        "train-mindxh": "train_jobs:train_mindxh", "train-torch": "train_jobs:train_torch",
        "train-mindformers": "train_jobs:train_mindformers", "gen-mindxh": "gen_jobs:gen_mindxh",
        "gen-hf": "gen_jobs:gen_hf", "grpo": "grpo_job:grpo"}


def _job(name: str) -> Callable[[dict], dict]:
    """Import only the job's module: the mindformers venv never imports the torch jobs."""
    import importlib

    module, func = JOBS[name].split(":")
    return getattr(importlib.import_module(f"mindxh.bench.{module}"), func)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job, params = argv[0], json.loads(argv[1])
    result = _job(job)(params)
    result.update(peak_rss_mb=round(peak_rss_mb(), 1), pid=os.getpid())
    print(MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
