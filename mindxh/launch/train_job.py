"""What `mindxh launch` runs: `python -m mindxh train ...` on every rank, its recipe checked here
first, so a recipe error is one line before any process starts rather than N rank logs."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mindxh.config import load_recipe
from mindxh.errors import MindxhError
from mindxh.parallel.context import cpu_refusal
from mindxh.train.run import held_run

LOG_SUBDIR = "logs"  # under the run's output directory: msrun's, and every rank's, log


class LaunchUsageError(MindxhError, ValueError):
    """The launch asked for cannot work (too few ranks, a recipe for another rank count)."""


@dataclass(frozen=True)
class TrainJob:
    args: list[str]  # what follows `python` on every rank
    output_dir: Path
    log_dir: Path


def plan_train(nproc: int, recipe: str, output_dir: str | None = None,
               max_steps: int | None = None, resume: bool = False, no_progress: bool = False,
               overrides: Sequence[str] = (), script: str | None = None) -> TrainJob:
    """The ranks' command line, and where the run and its logs go. The recipe's
    parallel.data_parallel must be nproc; when it is 1 (the default) it is set to nproc.
    `script` (tests only) replaces `-m mindxh` and is handed the same `train ...` arguments."""
    if nproc < 2:
        raise LaunchUsageError(f"--nproc {nproc}: data parallel needs at least 2 ranks; for one "
                               f"process run `mindxh train {recipe}`")
    train_args = ["train", recipe]
    own = list(overrides)
    if output_dir is not None:
        train_args += ["--output-dir", output_dir]
        own.append(f"output_dir={output_dir}")
    if max_steps is not None:
        train_args += ["--max-steps", str(max_steps)]
        own.append(f"train.max_steps={max_steps}")
    train_args += ["--resume"] * resume + ["--no-progress"] * no_progress
    for override in overrides:
        train_args += ["--set", override]
    resolved = load_recipe(recipe, own)
    p = resolved.parallel
    split = p.tensor * p.pipeline  # devices one model replica spans
    if p.data_parallel == 1 and nproc != split:
        if nproc % split:
            raise LaunchUsageError(f"--nproc {nproc} is not a multiple of parallel.tensor x "
                                   f"pipeline = {split} (the devices of one model replica)")
        dp_set = f"parallel.data_parallel={nproc // split}"  # the rest of the ranks: replicas
        train_args += ["--set", dp_set]
        resolved = load_recipe(recipe, own + [dp_set])  # what the ranks will load: check it now
    elif p.devices != nproc:
        raise LaunchUsageError(f"the recipe's parallel plan spans data {p.data_parallel} x tensor "
                               f"{p.tensor} x pipeline {p.pipeline} = {p.devices} devices but --nproc "
                               f"is {nproc}; pass --nproc {p.devices}")
    refusal = cpu_refusal(resolved)  # what every rank would refuse, before msrun starts
    if refusal:
        raise LaunchUsageError(refusal)
    out = Path(resolved.output_dir).resolve()  # the ranks run in this directory too
    held = None if resume else held_run(out)  # what rank 0 would refuse, before msrun starts
    if held:
        raise LaunchUsageError(f"{out} already holds a run; pass --resume to continue it ({held}), "
                               "or choose another --output-dir")
    head = [script] if script is not None else ["-m", "mindxh"]
    return TrainJob(head + train_args, out, out / LOG_SUBDIR)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as taskset or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def oversubscription_warning(nproc: int, cpus: int) -> str | None:
    """A line for the user when more ranks than CPUs would share the machine: on CPU every rank
    computes, so the ranks then take turns on the cores and the run is slower than fewer ranks."""
    if nproc <= cpus:
        return None
    return (f"--nproc {nproc} starts more ranks than the {cpus} CPU(s) this process may use: "
            f"on CPU the ranks will share cores and every step will wait for the slowest; "
            f"--nproc {cpus} or fewer is faster here")
