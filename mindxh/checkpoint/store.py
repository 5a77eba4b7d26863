"""Atomic, crash-safe training checkpoints (pure numpy + stdlib).

Layout under ``OUTPUT_DIR/checkpoints/``::

    step-00000100/
        model.safetensors      # name -> numpy array (model weights)
        optimizer.safetensors  # name -> numpy array (optimizer state)
        state.json             # trainer state (step, data loader, RNG, ...)
        recipe.yaml            # resolved recipe text

A checkpoint is written into a hidden temporary sibling
(``.step-NNNNNNNN.tmp-<pid>``), every file and the directory are fsynced, and
only then is it renamed to its final name. A final-named directory is therefore
always complete; a crash at any point leaves at worst a temporary that
:func:`clean_stale_temporaries` removes on the next start.

Test hook: if the environment variable ``MINDXH_FAULT_KILL_IN_CHECKPOINT``
equals the step being saved, the process SIGKILLs itself right after writing
``model.safetensors`` into the temporary directory (before the rename). Tests
use it to prove that ``kill -9`` mid-write loses nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from mindxh.errors import MindxhError
from mindxh.utils.fsio import fsync_path as _fsync_path

logger = logging.getLogger(__name__)

FORMAT = "mindxh-1"
FAULT_ENV = "MINDXH_FAULT_KILL_IN_CHECKPOINT"
CHECKPOINTS_DIRNAME = "checkpoints"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
RECIPE_FILE = "recipe.yaml"
REQUIRED_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, RECIPE_FILE)

_FINAL_RE = re.compile(r"^step-(\d{8,})$")
# tmp: being written; old: replaced checkpoint set aside; del: being pruned.
_TEMP_RE = re.compile(r"^\.step-(\d{8,})\.(tmp|old|del)-(\d+)$")


class CheckpointError(MindxhError):
    """A checkpoint is missing a file or a file is unreadable/corrupt."""


@dataclass
class Checkpoint:
    """Everything a resumed run needs, loaded from one step directory."""

    step: int
    model: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    state: dict[str, Any]
    recipe_text: str
    path: Path


def step_of_dirname(name: str) -> int | None:
    """The step of a final checkpoint folder's name (`step-00000020` -> 20), else None."""
    match = _FINAL_RE.match(name)
    return int(match.group(1)) if match else None


def step_dirname(step: int) -> str:
    """Final directory name for ``step`` (8 digits, zero padded)."""
    return f"step-{step:08d}"


def checkpoints_dir(root: str | Path) -> Path:
    """``root/checkpoints``: root is the run's OUTPUT_DIR."""
    return Path(root) / CHECKPOINTS_DIRNAME


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_tensors(path: str | Path, tensors: dict[str, np.ndarray]) -> None:
    """A safetensors file of this format, fsynced. One metadata key only: safetensors writes
    the metadata map in an order that changes from process to process, so two keys made the
    same tensors' files differ byte for byte between identical runs (the step is in
    state.json and the directory name)."""
    arrays = {name: np.ascontiguousarray(arr) for name, arr in tensors.items()}
    save_file(arrays, str(path), metadata={"format": FORMAT})
    _fsync_path(Path(path))


def _maybe_inject_fault(step: int) -> None:
    """Test hook: SIGKILL ourselves mid-write when the env var names this step."""
    if os.environ.get(FAULT_ENV, "").strip() == str(step):
        logger.warning("%s=%d: killing process mid-checkpoint (test hook)", FAULT_ENV, step)
        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(
    root: str | Path,
    step: int,
    model: dict[str, np.ndarray],
    optimizer: dict[str, np.ndarray],
    state: dict[str, Any],
    recipe_text: str,
    keep_last: int,
) -> Path:
    """Atomically write checkpoint ``step`` under ``root/checkpoints``; prune old ones.

    Returns the final checkpoint directory. An existing checkpoint of the same
    step (e.g. re-saved after a resume) is replaced without a window in which
    neither the old nor the new one is complete on disk.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    ckpt_dir = checkpoints_dir(root)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = step_dirname(step)
    final = ckpt_dir / name
    tmp = ckpt_dir / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()

    write_tensors(tmp / MODEL_FILE, model)
    _maybe_inject_fault(step)
    write_tensors(tmp / OPTIMIZER_FILE, optimizer)
    payload = {"format": FORMAT, "step": step, "state": state}
    _write_text(tmp / STATE_FILE, json.dumps(payload, indent=2) + "\n")
    _write_text(tmp / RECIPE_FILE, recipe_text)
    _fsync_path(tmp)

    if final.exists():
        old = ckpt_dir / f".{name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
        os.rename(tmp, final)
        _fsync_path(ckpt_dir)
        shutil.rmtree(old)
        logger.info("replaced existing checkpoint %s", final)
    else:
        os.rename(tmp, final)
    _fsync_path(ckpt_dir)
    logger.info("saved checkpoint %s", final)
    _prune(ckpt_dir, keep_last)
    return final


def _final_dirs(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Final-named step directories, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for entry in ckpt_dir.iterdir():
        step = step_of_dirname(entry.name)
        if step is not None and entry.is_dir():
            found.append((step, entry))
    return sorted(found)


def _is_complete(path: Path) -> bool:
    if not all((path / f).is_file() for f in REQUIRED_FILES):
        return False
    try:
        json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _complete_dirs(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first; warns about incomplete final dirs."""
    complete = []
    for step, path in _final_dirs(ckpt_dir):
        if _is_complete(path):
            complete.append((step, path))
        else:
            logger.warning(
                "checkpoint %s has a final name but is incomplete or unreadable; "
                "ignoring it (this should not happen with atomic saves)",
                path,
            )
    return complete


def _prune(ckpt_dir: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints."""
    complete = _complete_dirs(ckpt_dir)
    for step, path in complete[:-keep_last]:
        # Rename first so a crash mid-delete never leaves a half-deleted final dir.
        doomed = ckpt_dir / f".{step_dirname(step)}.del-{os.getpid()}"
        os.rename(path, doomed)
        shutil.rmtree(doomed)
        logger.info("pruned checkpoint %s", path)


def assign_tensors(tensors: dict[str, np.ndarray], params, where: str | Path) -> None:
    """Copy saved tensors into `params` ((name, Parameter) pairs); a tensor that is missing
    or has another shape, or a saved tensor no parameter takes (a model with fewer layers or
    experts would silently drop it), is a CheckpointError naming it and `where` it was read
    from. Nothing is assigned unless every tensor fits."""
    import mindspore as ms

    params = list(params)
    unused = sorted(set(tensors) - {name for name, _ in params})
    if unused:
        shown = ", ".join(f"'{n}'" for n in unused[:4]) + (", ..." if len(unused) > 4 else "")
        raise CheckpointError(f"{where}: holds {len(unused)} tensor(s) the model does not have "
                              f"({shown})")
    for name, param in params:
        saved = tensors.get(name)
        if saved is None or saved.shape != tuple(param.shape):
            found = "missing" if saved is None else f"of shape {saved.shape}"
            raise CheckpointError(f"{where}: tensor '{name}' is {found}; the model needs "
                                  f"{tuple(param.shape)}")
    for name, param in params:
        param.set_data(ms.Tensor(tensors[name]))


def load_model_weights(model, path: str | Path) -> None:
    """Set a model's parameters from the checkpoint directory `path` (model tensors only)."""
    assign_tensors(load_checkpoint(path).model, model.parameters_and_names(),
                   Path(path) / MODEL_FILE)


def complete_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """(step, directory) of every complete checkpoint under ``root/checkpoints``, oldest first."""
    return _complete_dirs(checkpoints_dir(root))


def latest_checkpoint(root: str | Path) -> Path | None:
    """Newest complete checkpoint under ``root/checkpoints``, or None."""
    complete = complete_checkpoints(root)
    return complete[-1][1] if complete else None


def _read_tensors(path: Path) -> dict[str, np.ndarray]:
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"corrupt or unreadable checkpoint file {path}: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unexpected format metadata {meta.get('format')!r}")
    return tensors


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a step directory; raises CheckpointError naming any bad file."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    for fname in REQUIRED_FILES:
        if not (path / fname).is_file():
            raise CheckpointError(f"checkpoint file {path / fname} is missing")
    state_path = path / STATE_FILE
    try:
        payload = json.loads(state_path.read_text(encoding="utf-8"))
        step, state = int(payload["step"]), payload["state"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"corrupt checkpoint file {state_path}: {exc}") from exc
    named = step_of_dirname(path.name)
    if named is not None and named != step:  # a resume would rewind over later work
        raise CheckpointError(f"{state_path} says step {step}, but its directory is {path.name}; "
                              "the checkpoint was edited or mixed up")
    if not isinstance(state, dict):
        raise CheckpointError(f"corrupt checkpoint file {state_path}: 'state' is not an object")
    try:
        recipe_text = (path / RECIPE_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"unreadable checkpoint file {path / RECIPE_FILE}: {exc}") from exc
    return Checkpoint(
        step=step,
        model=_read_tensors(path / MODEL_FILE),
        optimizer=_read_tensors(path / OPTIMIZER_FILE),
        state=state,
        recipe_text=recipe_text,
        path=path,
    )


def clean_stale_temporaries(root: str | Path) -> list[Path]:
    """Remove leftovers of runs killed mid-save; call once on trainer start.

    Deletes ``.step-*.tmp-*`` (half-written) and ``.step-*.del-*`` (half-pruned)
    directories. A ``.step-*.old-*`` directory (a replaced checkpoint set aside)
    is deleted if its final-named successor exists, otherwise it is renamed back,
    since it is then the only complete copy of that step. Must not run while
    another process is saving into the same directory.
    """
    ckpt_dir = checkpoints_dir(root)
    if not ckpt_dir.is_dir():
        return []
    removed = []
    for entry in sorted(ckpt_dir.iterdir()):
        match = _TEMP_RE.match(entry.name)
        if not match or not entry.is_dir():
            continue
        final = ckpt_dir / step_dirname(int(match.group(1)))
        if match.group(2) == "old" and not final.exists():
            os.rename(entry, final)
            logger.warning("restored set-aside checkpoint %s -> %s", entry, final)
            continue
        shutil.rmtree(entry)
        removed.append(entry)  # the caller says what it removed (once: the trainer warns)
    if removed:
        _fsync_path(ckpt_dir)
    return removed
