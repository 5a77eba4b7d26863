"""What every pipeline stage receives: the recipe, the output directory, earlier results.

The context also keeps those results on disk (OUT/stages/<stage>.json), so a re-run reads
back exactly what a finished stage handed on, and a stale file is an error naming it.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mindxh.config import Recipe
from mindxh.errors import MindxhError
from mindxh.pipeline.results import RESULT_TYPES, StageResult, from_dict
from mindxh.utils.fsio import atomic_write_json

__all__ = ["PATH_FIELDS", "Context", "PipelineError"]

R = TypeVar("R", bound=StageResult)


class PipelineError(MindxhError):
    """A stage cannot run (missing input from an earlier stage, a stale result file...)."""


@dataclass
class Context:
    recipe: Recipe
    out: Path
    results: dict[str, StageResult] = field(default_factory=dict)  # stage -> its result, in order

    def stage_dir(self, stage: str) -> Path:
        path = self.out / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def tokenizer_path(self) -> Path:
        """The run's tokenizer: a SentencePiece model, or a copied tokenizer.json."""
        json_file = self.out / "tokenizer.json"
        return json_file if json_file.is_file() else self.out / "tokenizer.model"

    def result_file(self, stage: str) -> Path:
        return self.out / "stages" / f"{stage}.json"

    def started_file(self, stage: str) -> Path:
        """The inputs of a stage that has started and not finished (a resume must match them)."""
        return self.out / "stages" / f"{stage}.started.json"

    def result(self, stage: str, kind: type[R]) -> R:
        """The result of an earlier stage that this one cannot do without."""
        found = self.optional(stage, kind)
        if found is None:
            raise PipelineError(f"this stage needs the results of stage '{stage}', which has not "
                                "run; add it to pipeline.stages")
        return found

    def optional(self, stage: str, kind: type[R]) -> R | None:
        """The result of an earlier stage, or None when the recipe leaves that stage out."""
        found = self.results.get(stage)
        if found is not None and not isinstance(found, kind):
            raise TypeError(f"stage '{stage}' holds a {type(found).__name__}, not a {kind.__name__}")
        return found

    def save(self, stage: str, result: StageResult) -> None:
        """Keep a finished stage's result, in memory and in OUT/stages/<stage>.json. The file
        holds its paths relative to OUT, so a moved or copied run reads its own files."""
        relative = _with_paths(result, lambda p: _relative(p, self.out))
        atomic_write_json(self.result_file(stage), dataclasses.asdict(relative), sort_keys=True)
        self.results[stage] = result

    def load(self, stage: str) -> StageResult:
        """Read back the result of a stage finished by an earlier run."""
        path = self.result_file(stage)
        try:
            result = from_dict(RESULT_TYPES[stage], json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise PipelineError(f"{path}: stale or unreadable result of stage '{stage}' ({exc}); "
                                f"redo that stage with --restart-from {stage}") from None

        def absolute(p: str) -> str:
            full = self.out / p  # an absolute p (results written before 2026-12) stays as is
            if not _inside(full, self.out):
                raise PipelineError(
                    f"{path}: stage '{stage}' points at {p}, outside this run's directory "
                    f"{self.out} (a run moved or copied before its results were relative): its "
                    f"files could be another run's; redo it with --restart-from {stage}")
            return str(full)

        result = _with_paths(result, absolute)
        self.results[stage] = result
        return result


# the fields of stage results that hold paths of the run's own files
PATH_FIELDS = frozenset({"path", "checkpoint", "data", "metrics", "file"})


def _with_paths(obj, change):
    """A copy of a result with `change` applied to its path fields (nested results too)."""
    updates = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in PATH_FIELDS and isinstance(value, str):
            updates[f.name] = change(value)
        elif dataclasses.is_dataclass(value):
            updates[f.name] = _with_paths(value, change)
    return dataclasses.replace(obj, **updates)


def _inside(path: Path, out: Path) -> bool:
    """Whether `path` is under `out` as written (symlinks not followed: a stage folder may be
    a link to another run's, as `tools/x1_study.py --reuse-sft` makes them)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(out))


def _relative(path: str, out: Path) -> str:
    if not _inside(Path(path), out):
        return path
    return os.path.relpath(os.path.abspath(path), os.path.abspath(out))
