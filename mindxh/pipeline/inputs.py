"""What each pipeline stage depends on, so a re-run can tell valid work from stale work.

A stage's *inputs* are the recipe values it reads (dotted keys, flattened from the sections
it names) and the fingerprints of the upstream stages whose results it reads; its
*fingerprint* is a hash of them. Chaining upstream fingerprints, not upstream results
(those hold wall times, which differ on every run), makes a change reach exactly the stages
downstream of it: `sft.cold_start_examples` reaches sft, grpo, controls, eval and export;
`evaluation.problems` reaches eval alone (export reads the policy, not the evaluation).

The runner records the inputs in the stage's file when it finishes (and in a `.started`
marker while it runs) and refuses to reuse work whose recorded inputs differ: see runner.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from mindxh.config import Recipe
from mindxh.config.loader import key_changes

__all__ = ["DEPENDS", "OUTPUTS", "changes", "clear_outputs", "dependents", "fingerprint",
           "stage_inputs"]

# Recipe sections no pretraining result depends on: post-training sections have their own
# stages below, and the name, output directory and MFU peak table change no number.
_NOT_PRETRAINING = {"name", "output_dir", "metrics", "sft", "grpo", "evaluation", "pipeline"}
PRETRAINING = "(every section but " + ", ".join(sorted(_NOT_PRETRAINING)) + ")"

# stage -> (recipe keys or sections it reads, upstream stages whose results it reads).
# A stage also reads its upstream stages' settings (GRPO reads sft.seq_len, every stage
# the model sections): those arrive through the upstream fingerprint.
DEPENDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tokenizer": (("seed", "tokenizer", "data.levels", "data.tasks"), ()),
    "pretrain": ((PRETRAINING,), ("tokenizer",)),
    "sft": (("sft",), ("pretrain",)),
    "grpo": (("grpo",), ("sft",)),
    "controls": (("pipeline.control_shuffled_rewards", "pipeline.control_more_sft"),
                 ("sft", "grpo")),
    "eval": (("evaluation",), ("sft", "grpo", "controls")),
    "export": (("pipeline.export_format",), ("sft", "grpo")),
}

# stage -> {upstream stage: what the stage reads instead when the recipe leaves that upstream
# out}. Without pretraining, SFT starts from freshly initialised weights: it then reads the
# model, data and seed sections (pretraining's inputs) and the tokenizer itself, so a change
# there still makes its work stale.
STANDS_IN: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "sft": {"pretrain": DEPENDS["pretrain"]},
}

# stage -> what it writes under the output directory (besides OUT/stages/<stage>*.json)
OUTPUTS: dict[str, tuple[str, ...]] = {
    "tokenizer": ("tokenizer.model", "tokenizer.vocab", "tokenizer.json", "tokenizer_config.json"),
    "pretrain": ("pretrain",),
    "sft": ("sft",),
    "grpo": ("grpo",),
    "controls": ("control_shuffled", "control_more_sft"),
    "eval": ("eval",),
    "export": ("export",),
}


# Keys added after runs were recorded, with the value that reproduces what those runs did:
# left out of the inputs while they hold it, so adding a key does not make old work stale.
_ADDED_KEYS: dict[str, Any] = {"data.tasks": ["math"]}


def _jsonable(value: Any) -> Any:
    """The value as JSON reads it back (tuples become lists, dataclasses dicts), so a value
    recorded in a stage file compares equal to the same value taken from a recipe."""
    def default(obj):
        if dataclasses.is_dataclass(obj):
            return dataclasses.asdict(obj)
        return str(obj)

    return json.loads(json.dumps(value, default=default, sort_keys=True))


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _flatten(f"{prefix}.{f.name}", getattr(value, f.name), out)
    else:
        out[prefix] = _jsonable(value)


def _recipe_values(recipe: Recipe, keys: tuple[str, ...]) -> dict[str, Any]:
    if keys == (PRETRAINING,):
        keys = tuple(f.name for f in dataclasses.fields(recipe) if f.name not in _NOT_PRETRAINING)
    out: dict[str, Any] = {}
    for key in keys:
        value: Any = recipe
        for part in key.split("."):
            value = getattr(value, part)
        _flatten(key, value, out)
    return {k: v for k, v in out.items() if k not in _ADDED_KEYS or v != _ADDED_KEYS[k]}


def fingerprint(inputs: dict[str, Any]) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stage_inputs(recipe: Recipe, order: list[str],
                 outside: dict[str, str | None] | None = None) -> dict[str, dict[str, Any]]:
    """stage -> its inputs, for the stages in `order`. An upstream stage not in `order` counts
    as its entry in `outside` (the tokenizer file's sha256: a tokenizer retrained by another
    invocation must make what read it stale), else None."""
    found: dict[str, dict[str, Any]] = {}

    def read(keys: tuple[str, ...], upstream: tuple[str, ...], values: dict[str, Any]) -> None:
        values.update(_recipe_values(recipe, keys))
        for up in upstream:
            values[f"stage {up}"] = fingerprint(found[up]) if up in found else \
                (outside or {}).get(up)

    for stage in order:
        values: dict[str, Any] = {}
        read(*DEPENDS[stage], values)
        for up, stand_in in STANDS_IN.get(stage, {}).items():
            if up not in found:
                read(*stand_in, values)
        found[stage] = values
    return found


def dependents(stage: str, order: list[str]) -> list[str]:
    """`stage` and every stage of `order` that reads its results, directly or not, in order."""
    hit = {stage}
    for s in order:
        if any(up in hit for up in DEPENDS[s][1]):
            hit.add(s)
    return [s for s in order if s in hit]


def changes(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs, one 'key: old -> new' each; recipe keys first, then upstream stages."""
    if recorded is None:
        return ["no inputs recorded (outputs of an older mindxh, or of an interrupted clean-up)"]
    return key_changes(recorded, current, order=lambda k: (k.startswith("stage "), k))


def clear_outputs(out: Path, stage: str) -> list[Path]:
    """Remove what `stage` wrote under `out` (never following a link out of it); the paths
    removed. The runner deletes the stage's result and marker files first, so an interrupted
    clean-up leaves outputs without a record, which the next run refuses to reuse."""
    removed = []
    for name in OUTPUTS[stage]:
        path = out / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            continue
        removed.append(path)
    return removed
