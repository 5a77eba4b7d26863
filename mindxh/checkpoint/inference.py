"""A trained model back from disk, for generation and evaluation (no optimizer, no data).

A checkpoint carries the resolved recipe it was trained with, so the model is rebuilt from
exactly that text; the tokenizer is the recipe's `tokenizer.path`, else the run directory's
`tokenizer.model` (the run trained it there).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from mindxh.checkpoint import store as ckpt
from mindxh.checkpoint.store import CheckpointError
from mindxh.config import Recipe, RecipeError, load_recipe_text
from mindxh.models.llama.model import build_model
from mindxh.tokenizer import Tokenizer

__all__ = ["SavedModel", "load_for_inference", "load_saved", "resolve_checkpoint"]

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory as given, or the newest complete one of a run directory."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p} does not exist (expected a run directory or a checkpoint "
                              f"directory such as RUN/{ckpt.CHECKPOINTS_DIRNAME}/step-00000300)")
    if not p.is_dir():
        raise CheckpointError(f"{p} is a file; pass its checkpoint directory or the run directory")
    if ckpt.checkpoints_dir(p).is_dir():
        latest = ckpt.latest_checkpoint(p)
        if latest is None:
            raise CheckpointError(f"{ckpt.checkpoints_dir(p)} holds no complete checkpoint")
        return latest
    if (p / ckpt.MODEL_FILE).exists() or (p / ckpt.STATE_FILE).exists() or p.name.startswith("step-"):
        return p  # load_checkpoint names whatever is missing
    raise CheckpointError(f"{p} is neither a checkpoint directory (with {ckpt.MODEL_FILE}) nor a "
                          f"run directory (with {ckpt.CHECKPOINTS_DIRNAME}/)")


def _tokenizer_path(recipe: Recipe, checkpoint_dir: Path) -> Path:
    """The recipe's tokenizer.path (relative to where training ran), else RUN/tokenizer.model."""
    run_copy = checkpoint_dir.parent.parent / "tokenizer.model"  # RUN/checkpoints/step-N
    candidates = [Path(recipe.tokenizer.path)] if recipe.tokenizer.path is not None else []
    candidates.append(run_copy)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"no tokenizer for checkpoint {checkpoint_dir}: looked for "
                            f"{' and '.join(str(c) for c in candidates)}")


@dataclass(frozen=True)
class SavedModel:
    """A checkpoint with what is needed to use it: its recipe (model.vocab_size resolved from
    the tokenizer when the recipe left it null) and its tokenizer."""

    checkpoint_dir: Path
    checkpoint: ckpt.Checkpoint
    recipe: Recipe
    tokenizer_path: Path
    tokenizer: Tokenizer


def load_saved(path: str | Path) -> SavedModel:
    """A checkpoint or run directory read back, tensors as NumPy arrays (no model built)."""
    checkpoint_dir = resolve_checkpoint(path)
    state = ckpt.load_checkpoint(checkpoint_dir)
    try:
        recipe = load_recipe_text(state.recipe_text, checkpoint_dir / ckpt.RECIPE_FILE)
    except RecipeError as exc:
        raise CheckpointError(f"its recipe cannot be loaded: {exc}") from None
    tok_path = _tokenizer_path(recipe, checkpoint_dir)
    try:
        tokenizer = Tokenizer.load(tok_path)
    except ValueError as exc:
        raise CheckpointError(f"tokenizer {tok_path}: {exc}") from None
    if recipe.model.vocab_size is None:
        recipe = replace(recipe, model=replace(recipe.model, vocab_size=tokenizer.vocab_size))
    return SavedModel(checkpoint_dir, state, recipe, tok_path, tokenizer)


def load_for_inference(path: str | Path):
    """`(model, tokenizer, recipe, checkpoint_dir)` from a checkpoint or run directory.

    The model is built in the current MindSpore mode, with the checkpoint's weights.
    """
    saved = load_saved(path)
    recipe, checkpoint_dir = saved.recipe, saved.checkpoint_dir
    model = build_model(recipe.model, recipe.seed)
    ckpt.assign_tensors(saved.checkpoint.model, model.parameters_and_names(),
                        checkpoint_dir / ckpt.MODEL_FILE)
    model.set_train(False)
    log.info("loaded %s (step %d)", checkpoint_dir, saved.checkpoint.step)
    return model, saved.tokenizer, recipe, checkpoint_dir
