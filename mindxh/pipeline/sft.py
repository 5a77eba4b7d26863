"""The SFT stage: cold-start SFT that stops at the first checkpoint good enough for GRPO.

GRPO gains most from a mediocre start (../shared/notes/grpo-on-cpu.md): the checkpoint
kept is the first whose greedy accuracy on the SFT validation problems reaches
`sft.stop_at_accuracy`. Training stops there, instead of running every step and choosing
afterwards: a checkpoint is written every `sft.eval_every` steps and judged at once through
the trainer's `on_checkpoint` hook. With the threshold off (0), or never reached, SFT runs
`sft.max_steps` and keeps the best checkpoint judged.

Every judgement is appended to OUT/sft/validation.jsonl with the training time so far.
A killed stage therefore resumes exactly: it first judges any checkpoint written but not
judged yet (a kill between the two), stops if one reaches the threshold, and otherwise lets
the trainer continue from its newest checkpoint, bitwise as if never interrupted (judging
uses its own model and no randomness, so it leaves the training state alone).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from mindxh.checkpoint import store as ckpt
from mindxh.data.prepare import prepare
from mindxh.pipeline.context import Context
from mindxh.pipeline.evaluation import Evaluator, model_recipe_of, sft_validation_set
from mindxh.pipeline.recipes import derive_sft_recipe
from mindxh.pipeline.results import CurvePoint, PretrainResult, SFTResult
from mindxh.tasks.mix import cold_start_samples
from mindxh.train.trainer import Trainer
from mindxh.utils.fsio import read_jsonl, write_jsonl

__all__ = ["run_sft"]

log = logging.getLogger(__name__)


def _prepare_cold_start(ctx: Context, out: Path) -> Path:
    """The cold-start set as a prepared SFT dataset. The JSONL is written once per stage run:
    a stage redone with other `sft.*` values starts from an emptied OUT/sft (runner.py)."""
    jsonl = out / "cold_start.jsonl"
    if not jsonl.exists():
        r = ctx.recipe
        write_jsonl(jsonl, cold_start_samples(r.data.tasks, r.seed, r.sft.level,
                                              r.sft.cold_start_examples))
    data = out / "data"
    prepare([str(jsonl)], str(data), str(ctx.tokenizer_path), kind="sft",
            seq_len=ctx.recipe.sft.seq_len, workers=1)
    return data


class _Judge:
    """Validation accuracy of SFT checkpoints as they are written; the trainer's hook."""

    def __init__(self, ctx: Context, out: Path, evaluator: Evaluator):
        self.file = out / "validation.jsonl"
        self.records: list[dict] = read_jsonl(self.file) if self.file.exists() else []
        self.threshold = ctx.recipe.sft.stop_at_accuracy
        self.problems = sft_validation_set(ctx)
        self.evaluator = evaluator
        self.train_s = self.records[-1]["train_s"] if self.records else 0.0  # earlier sessions
        self.mark = time.perf_counter()

    def reached(self, accuracy: float) -> bool:
        return self.threshold > 0 and accuracy >= self.threshold

    @property
    def stopped(self) -> bool:
        return any(self.reached(r["val_accuracy"]) for r in self.records)

    def __call__(self, step: int, path: Path | None) -> bool:
        """Judge checkpoint `step`; True: it reached the threshold, stop training."""
        self.train_s += time.perf_counter() - self.mark  # judging time is not training time
        accuracy = self.evaluator.accuracy(Path(path), self.problems)
        self.records.append({"step": step, "val_accuracy": accuracy,
                             "train_s": round(self.train_s, 3)})
        write_jsonl(self.file, self.records)
        log.info("SFT step %d: validation accuracy %.1f%%%s", step, 100 * accuracy,
                 " (reached sft.stop_at_accuracy: training stops here)" if self.reached(accuracy)
                 else "")
        self.mark = time.perf_counter()
        return self.reached(accuracy)

    def catch_up(self, out: Path) -> None:
        """Judge the checkpoints a killed run wrote but did not judge, up to the first that
        reaches the threshold."""
        judged = {r["step"] for r in self.records}
        for step, path in ckpt.complete_checkpoints(out):
            if step not in judged and not self.stopped:
                log.info("SFT step %d: checkpoint not judged before the interruption", step)
                self(step, path)

    def chosen(self) -> dict:
        """The first record reaching the threshold, else the best (earliest of equals)."""
        return next((r for r in self.records if self.reached(r["val_accuracy"])),
                    None) or max(self.records, key=lambda r: r["val_accuracy"])


def run_sft(ctx: Context) -> SFTResult:
    s = ctx.recipe.sft
    out = ctx.stage_dir("sft")
    data = _prepare_cold_start(ctx, out)
    pretrained = ctx.optional("pretrain", PretrainResult)
    init_from = ctx.recipe.train.init_from  # without a pretrain stage: SFT's own starting point
    if pretrained is not None:
        init = Path(pretrained.checkpoint)
    elif init_from:
        init = Path(init_from)
        log.info("SFT: no pretrain stage in pipeline.stages; starting from train.init_from=%s",
                 init_from)
    else:
        init = None
        log.info("SFT: no pretrain stage in pipeline.stages and no train.init_from; starting "
                 "from initialised weights")
    recipe = derive_sft_recipe(model_recipe_of(ctx), data, init, out, s.max_steps)
    judge = _Judge(ctx, out, Evaluator(ctx))  # built before training in every run: see above
    judge.catch_up(out)
    if judge.stopped:
        log.info("SFT: a judged checkpoint already reached sft.stop_at_accuracy; not training")
    else:
        Trainer(recipe, out, resume=True, show_progress=False, on_checkpoint=judge).run()
    chosen = judge.chosen()
    paths = dict(ckpt.complete_checkpoints(out))
    steps_run = judge.records[-1]["step"]
    return SFTResult(checkpoint=str(paths[chosen["step"]]), step=chosen["step"],
                     val_accuracy=chosen["val_accuracy"],
                     curve=[CurvePoint(step=r["step"], val_accuracy=r["val_accuracy"])
                            for r in judge.records],
                     train_s=round(judge.train_s, 1), steps_run=steps_run,
                     step_s=judge.train_s / max(1, steps_run), data=str(data),
                     examples=s.cold_start_examples)
