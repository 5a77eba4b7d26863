"""The problem sets the pipeline judges on, and the greedy evaluator of checkpoints.

Three held-out sets per task, each from its own seed stream (mindxh/tasks/), none in any
training stream and disjoint from one another:

* SFT validation (`sft.eval_problems`): chooses the SFT checkpoint (early stopping);
* GRPO validation (`grpo.eval_problems`): GRPO's curve. Not the SFT set: that one chose
  the starting checkpoint, so GRPO's step-0 figure on it is inflated by the choice;
* the test set (`evaluation.problems`): the only one variants are compared on.
"""
from __future__ import annotations

from pathlib import Path

from mindxh.checkpoint import store as ckpt
from mindxh.config import Recipe
from mindxh.generate.generator import Generator
from mindxh.pipeline.context import Context, PipelineError
from mindxh.pipeline.recipes import model_recipe
from mindxh.rewards.judge import greedy_records
from mindxh.tasks.arith import GRPO_VALIDATION_STREAM, VALIDATION_STREAM
from mindxh.tasks.mix import heldout_problems
from mindxh.tokenizer import Tokenizer
from mindxh.utils.fsio import write_jsonl

__all__ = ["Evaluator", "grpo_validation_set", "model_recipe_of", "sft_validation_set",
           "test_set", "tokenizer_of"]


def tokenizer_of(ctx: Context) -> Tokenizer:
    if not ctx.tokenizer_path.exists():
        raise PipelineError(f"{ctx.tokenizer_path} is missing; run the tokenizer stage")
    return Tokenizer.load(ctx.tokenizer_path)


def model_recipe_of(ctx: Context) -> Recipe:
    return model_recipe(ctx.recipe, ctx.tokenizer_path, tokenizer_of(ctx).vocab_size)


def sft_validation_set(ctx: Context) -> list:
    r = ctx.recipe
    return heldout_problems(r.data.tasks, r.seed + VALIDATION_STREAM, r.sft.level,
                            r.sft.eval_problems)


def grpo_validation_set(ctx: Context) -> list:
    r = ctx.recipe
    return heldout_problems(r.data.tasks, r.seed + GRPO_VALIDATION_STREAM, r.sft.level,
                            r.grpo.eval_problems)


def test_set(ctx: Context) -> list:
    """`evaluation.problems` test problems of each task in `data.tasks`, task after task."""
    r = ctx.recipe
    return heldout_problems(r.data.tasks, r.seed, r.sft.level, r.evaluation.problems)


class Evaluator:
    """Greedy held-out accuracy of checkpoints; one model and one compiled generator, reused
    for every checkpoint (loading weights does not recompile)."""

    def __init__(self, ctx: Context):
        # imported here, not at module load: they load mindspore (seconds), which importing
        # the stage table for the CLI or a test does not need
        from mindxh.models.llama.model import build_model
        from mindxh.train import runtime

        r = model_recipe_of(ctx)
        # device, graph mode and seed before any cell is built, as every trainer does: a
        # resumed pipeline may build this first in its process
        runtime.configure(r)
        self.tok = tokenizer_of(ctx)
        self.model = build_model(r.model, r.seed)
        self.max_new_tokens = r.evaluation.max_new_tokens
        self.generator = Generator(self.model, self.tok, r.evaluation.batch_size, r.sft.seq_len + 1)

    def records(self, checkpoint: Path, problems: list,
                records_path: Path | None = None) -> list[dict]:
        """One record per problem (question, answer, response, correct...), in order."""
        ckpt.load_model_weights(self.model, checkpoint)
        _, records = greedy_records(self.generator, self.tok, problems, self.max_new_tokens)
        if records_path is not None:
            write_jsonl(records_path, records)
        return records

    def accuracy(self, checkpoint: Path, problems: list,
                 records_path: Path | None = None) -> float:
        records = self.records(checkpoint, problems, records_path)
        return sum(r["correct"] for r in records) / len(records)
