"""The stages of the tiny X1 pipeline, shaped like DeepSeek-R1's recipe.

* tokenizer: SentencePiece on the pretraining corpus;
* pretrain: next-token prediction on easy problems (`data.levels`);
* sft: a *small* cold-start set of worked solutions at `sft.level`, prepared as packed
  shards with loss on the answers only; training stops at the first checkpoint reaching
  `sft.stop_at_accuracy` on the SFT validation problems, else the best is kept (sft.py);
* grpo: many more problems at the same level, with final answers only (no worked
  solutions, so more SFT is impossible), learnt from rule-checked rewards;
* controls: GRPO with rewards shuffled across the batch; more SFT epochs on the
  cold-start set for GRPO's wall time;
* eval: greedy accuracy on the test problems for every model above, with each problem's
  result kept for paired comparisons (evaluation.py names the three held-out sets);
* export: the final policy as MindIR, reloaded and checked against the live model.

`STAGE_FUNCTIONS` names each stage's function; its keys are the recipe's `STAGES`, in order.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

from mindxh.checkpoint import store as ckpt
from mindxh.config import Recipe
from mindxh.export.mindir import export_checkpoint
from mindxh.pipeline.context import Context
from mindxh.pipeline.evaluation import (
    Evaluator,
    grpo_validation_set,
    model_recipe_of,
    sft_validation_set,
    test_set,
    tokenizer_of,
)
from mindxh.pipeline.inputs import OUTPUTS
from mindxh.pipeline.recipes import derive_sft_recipe, with_overrides
from mindxh.pipeline.results import (
    ControlsResult,
    EvalResult,
    ExportResult,
    MoreSFTResult,
    PolicyResult,
    PretrainResult,
    SFTResult,
    StageResult,
    TokenizerResult,
)
from mindxh.pipeline.sft import run_sft
from mindxh.rl.grpo import GRPOTrainer
from mindxh.tokenizer import Tokenizer
from mindxh.train.trainer import Trainer, TrainResult, prepare_tokenizer
from mindxh.utils.fsio import atomic_write

__all__ = ["STAGE_FUNCTIONS", "Evaluator", "grpo_validation_set", "sft_validation_set", "test_set"]

log = logging.getLogger(__name__)


def _train(recipe: Recipe, out: Path) -> TrainResult:
    return Trainer(recipe, out, resume=True, show_progress=False).run()


# -- stages ------------------------------------------------------------------
def run_tokenizer(ctx: Context) -> TokenizerResult:
    if ctx.recipe.tokenizer.path is None:
        tok = prepare_tokenizer(ctx.recipe, ctx.out)  # trains OUT/tokenizer.model on data.levels
    else:  # a given one (e.g. a converted model's, for train.init_from): the run keeps a copy
        tok = copy_tokenizer(Path(ctx.recipe.tokenizer.path), ctx.out)
    return TokenizerResult(path=str(ctx.tokenizer_path), vocab_size=tok.vocab_size, sha256=tok.sha256)


def copy_tokenizer(source: Path, out: Path) -> Tokenizer:
    """`source` (a SentencePiece .model, or a tokenizer.json with the tokenizer_config.json
    beside it) copied into `out` under the names the stages read."""
    tok = Tokenizer.load(source)  # a missing or unreadable file is an error before any copy
    names = ({"tokenizer.json": source, "tokenizer_config.json": source.with_name(
        "tokenizer_config.json")} if source.suffix == ".json" else {"tokenizer.model": source})
    for stale in OUTPUTS["tokenizer"]:  # another kind's, from an earlier run
        if stale not in names:
            (out / stale).unlink(missing_ok=True)
    for name, src in names.items():
        if src.is_file():
            atomic_write(out / name, src.read_bytes())
    return tok


def run_pretrain(ctx: Context) -> PretrainResult:
    out = ctx.stage_dir("pretrain")
    recipe = with_overrides(model_recipe_of(ctx), {"output_dir": str(out)}, "pretrain recipe")
    res = _train(recipe, out)
    return PretrainResult(checkpoint=str(ckpt.latest_checkpoint(out)), steps=res.final_step,
                          loss=res.final_loss, eval_loss=res.eval_loss, tokens_per_s=res.tokens_per_s)


def _grpo(ctx: Context, name: str, shuffle: bool) -> PolicyResult:
    r = with_overrides(model_recipe_of(ctx), {"grpo.shuffle_rewards": shuffle}, f"{name} recipe")
    out = ctx.stage_dir(name)
    sft = Path(ctx.result("sft", SFTResult).checkpoint)
    res = GRPOTrainer(r, tokenizer_of(ctx), sft, out, resume=True).run(grpo_validation_set(ctx))
    return PolicyResult(checkpoint=str(ckpt.latest_checkpoint(out)), steps=res.steps,
                        val_accuracy=res.accuracy, train_s=res.wall_s,
                        metrics=str(out / "metrics.jsonl"))


def run_grpo(ctx: Context) -> PolicyResult:
    return _grpo(ctx, "grpo", shuffle=False)


def _more_sft(ctx: Context) -> MoreSFTResult:
    """SFT resumed from the kept SFT checkpoint for as many steps as GRPO's wall time buys."""
    sft, grpo = ctx.result("sft", SFTResult), ctx.result("grpo", PolicyResult)
    steps = max(1, math.ceil(grpo.train_s / sft.step_s))
    out = ctx.stage_dir("control_more_sft")
    extra = {"train.checkpoint_every": steps, "train.keep_last": 1, "optim.warmup_steps": 0}
    r = derive_sft_recipe(model_recipe_of(ctx), Path(sft.data), Path(sft.checkpoint), out, steps,
                          extra, label="more-SFT control recipe")
    res = _train(r, out)
    return MoreSFTResult(checkpoint=str(ckpt.latest_checkpoint(out)), steps=steps, train_s=res.wall_s)


def run_controls(ctx: Context) -> ControlsResult:
    p = ctx.recipe.pipeline
    shuffled = _grpo(ctx, "control_shuffled", shuffle=True) if p.control_shuffled_rewards else None
    more_sft = _more_sft(ctx) if p.control_more_sft else None
    return ControlsResult(shuffled_rewards=shuffled, more_sft=more_sft)


def run_eval(ctx: Context) -> EvalResult:
    problems = test_set(ctx)
    out = ctx.stage_dir("eval")
    models = {"sft": ctx.result("sft", SFTResult).checkpoint}
    grpo = ctx.optional("grpo", PolicyResult)
    if grpo is not None:
        models["grpo"] = grpo.checkpoint
    controls = ctx.optional("controls", ControlsResult)
    if controls is not None:
        models.update({f"control_{name}": path for name, path in controls.checkpoints().items()})
    accuracy, correct, evaluator = {}, {}, Evaluator(ctx)
    for name, path in models.items():
        records = evaluator.records(Path(path), problems, out / f"{name}_samples.jsonl")
        correct[name] = "".join("1" if r["correct"] else "0" for r in records)
        accuracy[name] = correct[name].count("1") / len(records)
        log.info("held-out accuracy of %s: %.1f%% (%d test problems)", name, 100 * accuracy[name],
                 len(problems))
    result = EvalResult(problems=ctx.recipe.evaluation.problems, accuracy=accuracy,
                        correct=correct, tasks=list(ctx.recipe.data.tasks))
    if len(result.tasks) > 1:
        for task, acc in result.by_task().items():
            log.info("held-out accuracy on %s: %s", task,
                     ", ".join(f"{m} {100 * a:.1f}%" for m, a in acc.items()))
    return result


def run_export(ctx: Context) -> ExportResult:
    if ctx.recipe.pipeline.export_format == "none":
        return ExportResult(skipped="pipeline.export_format is none")
    source = ctx.optional("grpo", PolicyResult) or ctx.result("sft", SFTResult)
    # what `mindxh export --checkpoint CKPT --out OUT/export` does: prefill/decode graphs,
    # tokenizer and manifest.json, reloaded and checked against the live model
    e = export_checkpoint(source.checkpoint, ctx.stage_dir("export"))
    return ExportResult(file=str(e.manifest), bytes=e.bytes, max_abs_diff=e.max_abs_diff,
                        checkpoint=source.checkpoint)


STAGE_FUNCTIONS: dict[str, Callable[[Context], StageResult]] = {
    "tokenizer": run_tokenizer,
    "pretrain": run_pretrain,
    "sft": run_sft,
    "grpo": run_grpo,
    "controls": run_controls,
    "eval": run_eval,
    "export": run_export,
}
