"""What every pipeline stage receives: the recipe, the output directory, earlier results."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mindxh.config import Recipe
from mindxh.errors import MindxhError

__all__ = ["Context", "PipelineError"]


class PipelineError(MindxhError):
    """A stage cannot run (missing input from an earlier stage, a failed check...)."""


@dataclass
class Context:
    recipe: Recipe
    out: Path
    results: dict = field(default_factory=dict)  # stage -> its results (from stages/*.json)

    def stage_dir(self, stage: str) -> Path:
        path = self.out / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def result(self, stage: str) -> dict:
        if stage not in self.results:
            raise PipelineError(f"stage '{stage}' needs the results of stage '{stage}', which has "
                                f"not run; add it to pipeline.stages")
        return self.results[stage]

    @property
    def tokenizer_path(self) -> Path:
        return self.out / "tokenizer.model"
