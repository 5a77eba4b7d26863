"""`mindxh pipeline`: every stage of the tiny X1 recipe in one resumable command.

Each stage writes its outputs under OUTPUT/<stage>/ and, when it has finished, a small
OUTPUT/stages/<stage>.json with its results, wall time and *inputs*: the recipe values and
upstream fingerprints it depended on (mindxh/pipeline/inputs.py). While it runs, the same
inputs sit in OUTPUT/stages/<stage>.started.json.

A re-run never reuses work done with other inputs, and never throws work away on its own:

* a finished stage whose inputs are unchanged is skipped; a started one is resumed from
  its checkpoints;
* a stage whose recorded inputs differ from this recipe's (or whose outputs carry no
  record) makes the run stop before anything runs, naming each key that changed and the
  `--restart-from` that redoes it;
* `--restart-from STAGE` redoes STAGE and every stage that reads its results, directly or
  not, from scratch: their result files, then their outputs, are removed first (a finished
  GRPO run is not "resumed" at its last step, an old cold-start set is not reused). Stages
  that do not depend on it are kept if their inputs are unchanged, e.g. export when
  restarting eval.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from mindxh.config import Recipe, recipe_to_yaml
from mindxh.config.post_training import STAGES
from mindxh.pipeline import report
from mindxh.pipeline.context import Context, PipelineError
from mindxh.pipeline.inputs import (
    OUTPUTS,
    changes,
    clear_outputs,
    dependents,
    fingerprint,
    stage_inputs,
)
from mindxh.pipeline.stages import STAGE_FUNCTIONS
from mindxh.utils.fsio import atomic_write, atomic_write_json, file_sha256

__all__ = ["run_pipeline"]

log = logging.getLogger(__name__)


def _recorded(ctx: Context, stage: str) -> tuple[str | None, dict[str, Any] | None]:
    """(what holds the stage's record, the inputs it records); (None, None): never started."""
    if ctx.result_file(stage).exists():
        return str(ctx.result_file(stage)), ctx.load(stage).inputs
    started = ctx.started_file(stage)
    if started.exists():
        try:
            return str(started), json.loads(started.read_text(encoding="utf-8"))["inputs"]
        except (OSError, ValueError, KeyError, TypeError):
            return str(started), None
    present = [name for name in OUTPUTS[stage] if (ctx.out / name).exists()]
    return (str(ctx.out / present[0]), None) if present else (None, None)


def _check_kept(ctx: Context, order: list[str], current: dict[str, dict], redo: list[str],
                restart_from: str | None) -> None:
    """Refuse the run if a stage it would keep (skip or resume) ran with other inputs."""
    for stage in order:
        if stage in redo:
            continue
        where, recorded = _recorded(ctx, stage)
        if where is None or (recorded is not None
                             and fingerprint(recorded) == fingerprint(current[stage])):
            continue
        again = ", ".join(dependents(stage, order))
        also = (f" (--restart-from {restart_from} redoes only {', '.join(redo)})"
                if restart_from else "")
        raise PipelineError(
            f"stage {stage} ran with other inputs than this recipe's ({where}): "
            + "; ".join(changes(recorded, current[stage]))
            + f". Its results would be stale{also}: redo it with --restart-from {stage} "
              f"(redoes {again} from scratch), or use another output_dir")


REPORT_FILES = ("report.json", "report.md", "grpo.png")  # written after the last stage


def _clear(ctx: Context, redo: list[str], restart_from: str) -> None:
    """Forget the stages to redo: result and marker files first, then their outputs."""
    for stage in redo:
        ctx.result_file(stage).unlink(missing_ok=True)
        ctx.started_file(stage).unlink(missing_ok=True)
    for stage in redo:
        removed = clear_outputs(ctx.out, stage)
        log.info("stage %s: will be redone from scratch (--restart-from %s)%s", stage, restart_from,
                 f"; removed {', '.join(str(p) for p in removed)}" if removed else "")
    for name in REPORT_FILES:  # they describe what was just removed; the run writes them anew
        (ctx.out / name).unlink(missing_ok=True)


def _record_recipe(recipe: Recipe, out: Path) -> None:
    recipe_file = out / "recipe.yaml"
    text = recipe_to_yaml(recipe)
    if recipe_file.exists() and recipe_file.read_text() != text:
        log.info("%s: updated to this run's recipe (every stage's recorded inputs were checked)",
                 recipe_file)
    atomic_write(recipe_file, text)


def _check_prerequisites(ctx: Context, order: list[str]) -> None:
    """Before any stage runs: each one's indispensable upstream stages are in the list (a
    stage left out is not read back, even if an earlier run finished it)."""
    needs = {"grpo": ["sft"], "controls": ["sft"], "eval": ["sft"], "export": ["sft"]}
    if ctx.recipe.pipeline.control_more_sft:
        needs["controls"].append("grpo")  # it spends GRPO's wall time on more SFT
    for stage in order:
        missing = [up for up in needs.get(stage, []) if up not in order]
        if missing:
            raise PipelineError(f"pipeline.stages: stage '{stage}' needs stage(s) {missing}, "
                                "which the list leaves out; add them")
    later = [s for s in order if s != "tokenizer"]
    if later and "tokenizer" not in order and not ctx.tokenizer_path.is_file():
        raise PipelineError(f"pipeline.stages: {later} need the tokenizer, and "
                            f"{ctx.tokenizer_path} does not exist; add 'tokenizer' to the list")


def run_pipeline(recipe: Recipe, restart_from: str | None = None) -> dict:
    """Run the recipe's pipeline.stages in order; returns the report dict."""
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = [s for s in STAGES if s in recipe.pipeline.stages]
    ctx = Context(recipe, out)
    if restart_from is not None and restart_from not in order:
        raise PipelineError(f"--restart-from {restart_from}: not one of this recipe's stages {order}")
    _check_prerequisites(ctx, order)
    outside = {} if "tokenizer" in order or not ctx.tokenizer_path.is_file() else \
        {"tokenizer": file_sha256(ctx.tokenizer_path)}
    current = stage_inputs(recipe, order, outside)
    redo = dependents(restart_from, order) if restart_from is not None else []
    _check_kept(ctx, order, current, redo, restart_from)
    _record_recipe(recipe, out)
    if restart_from is not None:
        _clear(ctx, redo, restart_from)
    for stage in order:
        if ctx.result_file(stage).exists():
            ctx.load(stage)
            log.info("stage %s: already done with the same inputs (%s), skipped", stage,
                     ctx.result_file(stage))
            continue
        inputs = current[stage]
        started = ctx.started_file(stage)
        if started.exists():
            log.info("stage %s: resuming (started before with the same inputs)", stage)
        else:
            log.info("stage %s: starting", stage)
            atomic_write_json(started, {"inputs": inputs, "fingerprint": fingerprint(inputs)},
                              sort_keys=True)
        t0 = time.perf_counter()
        result = STAGE_FUNCTIONS[stage](ctx)
        result = dataclasses.replace(result, wall_s=round(time.perf_counter() - t0, 1),
                                     inputs=inputs, fingerprint=fingerprint(inputs))
        ctx.save(stage, result)
        started.unlink(missing_ok=True)
        log.info("stage %s: done in %.1fs", stage, result.wall_s)
    data = report.build(ctx)
    atomic_write_json(out / "report.json", data, sort_keys=True)
    atomic_write(out / "report.md", report.markdown(ctx, data))
    report.plot(ctx, out / "grpo.png")  # REPORT_FILES
    return data
