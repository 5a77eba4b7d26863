"""One run's output directory and process set-up, shared by `Trainer` and the GRPO trainer.

Both trainers must agree on what a run directory is, or a resume of one would read the
other's leftovers differently. A run goes through two phases, each one object built whole:

* `RunDir.open` (before any model exists): refuse a directory that holds a previous run
  unless resuming, pick the checkpoint to resume from, configure MindSpore (device, mode,
  seed: it must precede building any cell), remove temporaries of an interrupted save;
* `RunDir.start` (once the model and optimizer exist): restore them from that checkpoint
  and open the metrics log; the `Run` it returns saves checkpoints and writes metrics.

Only rank 0 writes checkpoints and metrics.jsonl: another rank opening the log would
truncate rank 0's records.
"""
from __future__ import annotations

import fcntl
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mindxh.checkpoint import store as ckpt
from mindxh.config import Recipe
from mindxh.config.loader import recipe_changes
from mindxh.errors import MindxhError
from mindxh.train import runtime
from mindxh.train.metrics import MetricsLog

log = logging.getLogger(__name__)

__all__ = ["Run", "RunDir", "TrainingError", "check_finite", "held_run", "holds_lock",
           "release_lock"]


class TrainingError(MindxhError, RuntimeError):
    """The run cannot go on (non-finite loss, unusable output directory...)."""


def check_finite(ok: bool, loss: float, grad_norm: float, step: int, hint: str) -> None:
    """Stop at the first non-finite step: the optimizer skipped it, so nothing bad is saved."""
    if not ok or not math.isfinite(loss):
        raise TrainingError(f"non-finite loss ({loss}) or gradient norm ({grad_norm}) at step "
                            f"{step}; parameters were not updated and no checkpoint was written. "
                            f"{hint}")


@dataclass(frozen=True)
class RunDir:
    """A claimed output directory in a configured process; see the module docstring."""

    out: Path
    latest: Path | None  # the checkpoint this run resumes from, if any
    rank: int
    keep_last: int

    @classmethod
    def open(cls, out: str | Path, recipe: Recipe, resume: bool) -> RunDir:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        latest = ckpt.latest_checkpoint(out)
        held = held_run(out, latest)
        if not resume and held:
            raise TrainingError(f"{out} already holds {held}; pass --resume to continue that "
                                "run, or choose another --output-dir")
        if latest is None and resume:
            log.warning("--resume: no checkpoint in %s, starting from step 0", out)
        runtime.configure(recipe)
        rank = runtime.rank()
        if rank == 0:
            _lock(out)  # before anything is cleaned, pruned or truncated
            for path in ckpt.clean_stale_temporaries(out):
                log.warning("removed an unfinished checkpoint write: %s", path)
        return cls(out, latest, rank, recipe.train.keep_last)

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def start(self, recipe_text: str, model, optimizer,
              load_state: Callable[[dict[str, Any]], None]) -> Run:
        """Restore `model` and `optimizer` (an AdamW) from `latest`, hand the checkpoint's
        trainer state to `load_state` (a ValueError there means it does not fit this run),
        then open the metrics log at the step the run continues from."""
        step = 0
        if self.latest is not None:
            step = self._restore(self.latest, recipe_text, model, optimizer, load_state)
        resume_step = step if self.latest is not None else None
        metrics = (MetricsLog(self.out / "metrics.jsonl", resume_step=resume_step)
                   if self.lead else None)
        return Run(self, recipe_text, model, optimizer, step, metrics)

    @staticmethod
    def _restore(path: Path, recipe_text: str, model, optimizer,
                 load_state: Callable[[dict[str, Any]], None]) -> int:
        state = ckpt.load_checkpoint(path)
        if state.recipe_text != recipe_text:
            changed = recipe_changes(state.recipe_text, recipe_text)
            if changed:
                moves = " (the learning-rate schedule follows train.max_steps)" if any(
                    c.startswith("train.max_steps:") for c in changed) else ""
                log.warning("resuming with a recipe that differs from the checkpoint's "
                            "(%s/recipe.yaml): %s%s", path, "; ".join(changed), moves)
        try:
            ckpt.assign_tensors(state.model, model.parameters_and_names(), path / ckpt.MODEL_FILE)
            ckpt.assign_tensors(state.optimizer, optimizer.state_parameters(),
                                path / ckpt.OPTIMIZER_FILE)
        except ckpt.CheckpointError as exc:
            raise TrainingError(f"{exc}; the recipe's model differs from the checkpoint's") from None
        try:
            load_state(state.state)
        except ValueError as exc:  # DataError, or a saved state of another shape
            raise TrainingError(f"{path}/{ckpt.STATE_FILE}: {exc}") from None
        except (KeyError, TypeError, AttributeError, RuntimeError) as exc:  # edited by hand?
            raise TrainingError(f"{path}/{ckpt.STATE_FILE}: not this trainer's state "
                                f"({type(exc).__name__}: {exc})") from None
        return state.step


def held_run(out: Path, latest: Path | None = None) -> str | None:
    """What of an earlier run `out` holds (its checkpoints, or its metrics.jsonl), or None:
    `mindxh train` without --resume refuses such a directory, and `mindxh launch` before
    it starts the ranks. `latest` saves a second look when the caller has it."""
    latest = latest or ckpt.latest_checkpoint(out)
    if latest is not None:
        return f"checkpoints (newest: {latest.name})"
    return "a run's metrics.jsonl" if (out / "metrics.jsonl").exists() else None


_LOCKS: dict[str, int] = {}  # output directory -> the open descriptor holding its lock


def _lock(out: Path) -> None:
    """Hold an exclusive lock on the run directory for the rest of this process: two
    trainings in one directory wrote each step twice, overwrote each other's checkpoints and
    pruned the same one (a traceback). This process may open it again (a resume in-process)."""
    key = os.path.realpath(out)
    if key in _LOCKS:
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TrainingError(f"{out}: another process is training in this directory (it holds "
                            "its lock); wait for it, or choose another --output-dir") from None
    _LOCKS[key] = fd


def holds_lock(out: str | Path) -> bool:
    """Whether this process holds `out`'s lock (so what is in it is this run's)."""
    return os.path.realpath(out) in _LOCKS


def release_lock(out: str | Path) -> None:
    """Let another process train in `out` (a run that ended; process exit does it anyway)."""
    fd = _LOCKS.pop(os.path.realpath(out), None)
    if fd is not None:
        os.close(fd)


@dataclass(frozen=True)
class Run:
    """A started run: where it continues from, and what it writes (rank 0 only)."""

    dir: RunDir
    recipe_text: str
    model: Any
    optimizer: Any
    step: int  # the optimizer step this process starts after (0: a fresh run)
    metrics: MetricsLog | None  # None on ranks other than 0

    @property
    def resumed(self) -> bool:
        return self.dir.latest is not None

    def log_metrics(self, record: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(record)

    def save(self, step: int, state: Callable[[], dict[str, Any]]) -> Path | None:
        """Checkpoint `step` (weights, optimizer, `state()`), keeping the newest `keep_last`."""
        if not self.dir.lead:
            return None
        model = {name: p.asnumpy() for name, p in self.model.parameters_and_names()}
        optim = {name: p.asnumpy() for name, p in self.optimizer.state_parameters()}
        return ckpt.save_checkpoint(self.dir.out, step, model, optim, state(), self.recipe_text,
                                    self.dir.keep_last)
