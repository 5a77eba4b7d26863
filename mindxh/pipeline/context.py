"""What every pipeline stage receives: the recipe, the output directory, earlier results.

The context also keeps those results on disk (OUT/stages/<stage>.json), so a re-run reads
back exactly what a finished stage handed on, and a stale file is an error naming it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from mindxh.config import Recipe
from mindxh.errors import MindxhError
from mindxh.pipeline.results import RESULT_TYPES, StageResult, from_dict
from mindxh.utils.fsio import atomic_write_json

__all__ = ["Context", "PipelineError"]

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
        return self.out / "tokenizer.model"

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
        """Keep a finished stage's result, in memory and in OUT/stages/<stage>.json."""
        atomic_write_json(self.result_file(stage), dataclasses.asdict(result), sort_keys=True)
        self.results[stage] = result

    def load(self, stage: str) -> StageResult:
        """Read back the result of a stage finished by an earlier run."""
        path = self.result_file(stage)
        try:
            result = from_dict(RESULT_TYPES[stage], json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            raise PipelineError(f"{path}: stale or unreadable result of stage '{stage}' ({exc}); "
                                f"redo that stage with --restart-from {stage}") from None
        self.results[stage] = result
        return result
