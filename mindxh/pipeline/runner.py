"""`mindxh pipeline`: every stage of the tiny X1 recipe in one resumable command.

Each stage writes its outputs under OUTPUT/<stage>/ and, when it has finished, a small
OUTPUT/stages/<stage>.json with its results and wall time. A re-run skips finished
stages and resumes an unfinished one from its checkpoints, so an interrupted pipeline
continues where it stopped (`--restart-from STAGE` forgets that stage and all later ones).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from mindxh.config import Recipe, recipe_to_yaml
from mindxh.config.stages import STAGES
from mindxh.pipeline import report, stages
from mindxh.pipeline.context import Context, PipelineError

log = logging.getLogger(__name__)


def _marker(out: Path, stage: str) -> Path:
    return out / "stages" / f"{stage}.json"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run_pipeline(recipe: Recipe, restart_from: str | None = None) -> dict:
    """Run the recipe's pipeline.stages in order; returns the report dict."""
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = [s for s in STAGES if s in recipe.pipeline.stages]
    recipe_file = out / "recipe.yaml"
    text = recipe_to_yaml(recipe)
    if recipe_file.exists() and recipe_file.read_text() != text and restart_from is None:
        raise PipelineError(f"{out} holds a pipeline run with a different recipe ({recipe_file}); "
                            "use another output_dir, or --restart-from STAGE to redo stages")
    recipe_file.write_text(text)
    if restart_from is not None:
        if restart_from not in order:
            raise PipelineError(f"--restart-from {restart_from}: not one of this recipe's stages {order}")
        for stage in order[order.index(restart_from):]:
            _marker(out, stage).unlink(missing_ok=True)
    ctx = Context(recipe, out)
    for stage in order:
        marker = _marker(out, stage)
        if marker.exists():
            ctx.results[stage] = json.loads(marker.read_text())
            log.info("stage %s: already done (%s), skipped", stage, marker)
            continue
        log.info("stage %s: starting", stage)
        t0 = time.perf_counter()
        result = getattr(stages, f"run_{stage}")(ctx)
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        ctx.results[stage] = result
        _write_json(marker, result)
        log.info("stage %s: done in %.1fs", stage, result["wall_s"])
    data = report.build(ctx)
    _write_json(out / "report.json", data)
    (out / "report.md").write_text(report.markdown(ctx, data))
    report.plot(ctx, out / "grpo.png")
    return data
