"""Load a recipe for planning: a parallel plan that does not divide is not an error but a list
of reasons, so `mindxh plan` can report them with the memory it would need (and exit 1, not 2).
"""
from __future__ import annotations

from pathlib import Path

from mindxh.config.loader import load_recipe_and_plan_problems
from mindxh.config.schema import Recipe

__all__ = ["load_for_plan"]


def load_for_plan(path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                  ) -> tuple[Recipe, list[str]]:
    """(recipe, every parallel rule it breaks as 'key (where): message'). Other recipe errors
    (unknown keys, bad types, seq_len > max_seq_len...) raise RecipeError as usual."""
    return load_recipe_and_plan_problems(path, overrides)
