"""The recipes the stages train with, derived from the pipeline's recipe without mutating it.

A recipe is a value: a stage that needs other settings states them as one dict of dotted
overrides (`{"train.max_steps": 40, "optim.lr": 1e-3}`), and `with_overrides` builds a new
recipe from it with `dataclasses.replace`, logging what changed. The input stays as loaded.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mindxh.config import Recipe
from mindxh.config.schema import DatasetConfig

__all__ = ["derive_sft_recipe", "model_recipe", "sft_overrides", "with_overrides"]

log = logging.getLogger(__name__)


def with_overrides(recipe: Recipe, overrides: Mapping[str, Any], label: str = "recipe") -> Recipe:
    """A new recipe with `section.field` (or top-level `field`) keys set; `recipe` is unchanged."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        if "." in section:
            raise ValueError(f"override {key!r}: only 'field' or 'section.field' keys")
        if section:
            sections.setdefault(section, {})[name] = value
        else:
            top[name] = value
    for section, values in sections.items():
        top[section] = dataclasses.replace(getattr(recipe, section), **values)
    new = dataclasses.replace(recipe, **top)
    changed = [f"{k}: {_get(recipe, k)!r} -> {v!r}" for k, v in overrides.items()
               if _get(recipe, k) != v]
    log.debug("%s: %s", label, "; ".join(changed) or "no change")
    return new


def _get(recipe: Recipe, key: str) -> Any:
    value: Any = recipe
    for part in key.split("."):
        value = getattr(value, part)
    return value


def model_recipe(recipe: Recipe, tokenizer_path: Path, vocab_size: int) -> Recipe:
    """The recipe with the pipeline's own tokenizer, so every stage builds the same model."""
    return with_overrides(recipe, {"tokenizer.path": str(tokenizer_path),
                                   "model.vocab_size": vocab_size}, "model recipe")


def sft_overrides(recipe: Recipe, data: Path, init_from: Path | None, out: Path,
                  steps: int) -> dict[str, Any]:
    """What SFT changes in the model recipe: the cold-start data, `sft.*` shapes and optimiser,
    and a checkpoint every `sft.eval_every` steps (each is a candidate for early stopping; 0:
    at the end only). `sft.schedule: constant` holds the lr after warmup (min_lr_ratio 1)."""
    s = recipe.sft
    every = s.eval_every or steps
    schedule = {"optim.min_lr_ratio": 1.0} if s.schedule == "constant" else {}
    return {
        "output_dir": str(out),
        "data.source": "prepared",
        "data.datasets": [DatasetConfig(path=str(data), weight=1.0)],
        "train.init_from": None if init_from is None else str(init_from),
        "train.seq_len": s.seq_len,
        "train.batch_size": s.batch_size,
        "train.grad_accum": 1,
        "train.max_steps": steps,
        "train.eval_every": 0,
        "train.log_every": min(recipe.train.log_every, every),
        "train.checkpoint_every": every,
        "train.keep_last": steps // every + 2,
        "optim.lr": s.lr,
        "optim.warmup_steps": min(s.warmup_steps, steps),
        **schedule,
    }


def derive_sft_recipe(recipe: Recipe, data: Path, init_from: Path | None, out: Path, steps: int,
                      extra: Mapping[str, Any] | None = None, label: str = "sft recipe") -> Recipe:
    """The recipe of an SFT run of `steps` steps on prepared `data` from `init_from`;
    `extra` overrides go on top (the more-SFT control's checkpointing and warmup)."""
    overrides = {**sft_overrides(recipe, data, init_from, out, steps), **(extra or {})}
    return with_overrides(recipe, overrides, label)
