"""The stages of the tiny X1 pipeline, shaped like DeepSeek-R1's recipe.

* tokenizer: SentencePiece on the pretraining corpus;
* pretrain: next-token prediction on easy problems (`data.levels`);
* sft: a *small* cold-start set of worked solutions at `sft.level`, prepared as packed
  shards with loss on the answers only; the checkpoint kept is the first to reach
  `sft.stop_at_accuracy` on validation problems (early stopping), else the best;
* grpo: many more problems at the same level, with final answers only (no worked
  solutions, so more SFT is impossible), learnt from rule-checked rewards;
* controls: GRPO with rewards shuffled across the batch; more SFT epochs on the
  cold-start set for GRPO's wall time;
* eval: greedy accuracy on held-out problems for every model above;
* export: the final policy as MindIR, reloaded and checked against the live model.
"""
from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

from mindxh.checkpoint import store as ckpt
from mindxh.pipeline.context import Context, PipelineError
from mindxh.tasks.arith import (
    VALIDATION_STREAM,
    cold_start_samples,
    greedy_accuracy,
    heldout_problems,
)

log = logging.getLogger(__name__)


def _tokenizer(ctx: Context):
    from mindxh.tokenizer import Tokenizer

    if not ctx.tokenizer_path.exists():
        raise PipelineError(f"{ctx.tokenizer_path} is missing; run the tokenizer stage")
    return Tokenizer.load(ctx.tokenizer_path)


def _model_recipe(ctx: Context):
    r = copy.deepcopy(ctx.recipe)
    r.tokenizer.path = str(ctx.tokenizer_path)
    r.model.vocab_size = _tokenizer(ctx).vocab_size
    return r


def validation_set(ctx: Context):
    r = ctx.recipe
    return heldout_problems(r.seed + VALIDATION_STREAM, r.sft.level, r.sft.eval_problems)


def test_set(ctx: Context):
    r = ctx.recipe
    return heldout_problems(r.seed, r.sft.level, r.evaluation.problems)


class Evaluator:
    """Greedy held-out accuracy of checkpoints; one model and one compiled generator, reused
    for every checkpoint (loading weights does not recompile)."""

    def __init__(self, ctx: Context):
        from mindxh.generate.generator import Generator
        from mindxh.models.llama.model import build_model

        r = _model_recipe(ctx)
        self.tok = _tokenizer(ctx)
        self.model = build_model(r.model, r.seed)
        self.max_new_tokens = r.evaluation.max_new_tokens
        self.generator = Generator(self.model, self.tok, r.evaluation.batch_size, r.sft.seq_len + 1)

    def accuracy(self, checkpoint: Path, problems, records_path: Path | None = None) -> float:
        ckpt.load_model_weights(self.model, checkpoint)
        acc, records = greedy_accuracy(self.generator, self.tok, problems, self.max_new_tokens)
        if records_path is not None:
            with records_path.open("w") as f:
                for rec in records:
                    f.write(json.dumps(rec) + "\n")
        return acc


# -- stages ------------------------------------------------------------------
def run_tokenizer(ctx: Context) -> dict:
    from mindxh.train.trainer import prepare_tokenizer

    tok = prepare_tokenizer(ctx.recipe, ctx.out)  # trains OUT/tokenizer.model on data.levels
    return {"path": str(ctx.tokenizer_path), "vocab_size": tok.vocab_size, "sha256": tok.sha256}


def _train(recipe, out: Path):
    from mindxh.train.trainer import Trainer

    return Trainer(recipe, out, resume=True, show_progress=False).run()


def run_pretrain(ctx: Context) -> dict:
    r = _model_recipe(ctx)
    out = ctx.stage_dir("pretrain")
    r.output_dir = str(out)
    res = _train(r, out)
    return {"checkpoint": str(ckpt.latest_checkpoint(out)), "steps": res.final_step,
            "loss": res.final_loss, "eval_loss": res.eval_loss, "tokens_per_s": res.tokens_per_s}


def _prepare_cold_start(ctx: Context, out: Path) -> Path:
    from mindxh.data.prepare import prepare

    jsonl = out / "cold_start.jsonl"
    if not jsonl.exists():
        tmp = jsonl.with_suffix(".tmp")
        r = ctx.recipe
        samples = cold_start_samples(r.seed, r.sft.level, r.sft.cold_start_examples)
        tmp.write_text("".join(json.dumps(s) + "\n" for s in samples))
        tmp.replace(jsonl)
    data = out / "data"
    prepare([str(jsonl)], str(data), str(ctx.tokenizer_path), kind="sft",
            seq_len=ctx.recipe.sft.seq_len, workers=1)
    return data


def _sft_recipe(ctx: Context, data: Path, init_from: Path, out: Path, steps: int):
    from mindxh.config.schema import DatasetConfig

    s = ctx.recipe.sft
    r = _model_recipe(ctx)
    r.output_dir = str(out)
    r.data.source = "prepared"
    r.data.datasets = [DatasetConfig(path=str(data), weight=1.0)]
    r.train.init_from = str(init_from)
    r.train.seq_len, r.train.batch_size, r.train.grad_accum = s.seq_len, s.batch_size, 1
    r.train.max_steps = steps
    r.train.eval_every = 0
    r.train.log_every = min(r.train.log_every, s.eval_every)
    r.train.checkpoint_every = s.eval_every
    r.train.keep_last = steps // s.eval_every + 2
    r.optim.lr, r.optim.warmup_steps = s.lr, min(s.warmup_steps, steps)
    return r


def run_sft(ctx: Context) -> dict:
    s = ctx.recipe.sft
    out = ctx.stage_dir("sft")
    data = _prepare_cold_start(ctx, out)
    pretrained = Path(ctx.result("pretrain")["checkpoint"])
    res = _train(_sft_recipe(ctx, data, pretrained, out, s.max_steps), out)
    validation, evaluator = validation_set(ctx), Evaluator(ctx)
    curve, chosen = [], None
    for step, path in ckpt.complete_checkpoints(out):
        acc = evaluator.accuracy(path, validation)
        curve.append({"step": step, "val_accuracy": acc})
        log.info("SFT step %d: validation accuracy %.1f%%", step, 100 * acc)
        if s.stop_at_accuracy and acc >= s.stop_at_accuracy:
            chosen = (step, path, acc)
            break
    if chosen is None:
        best = max(curve, key=lambda c: c["val_accuracy"])
        chosen = (best["step"], out / "checkpoints" / ckpt.step_dirname(best["step"]),
                  best["val_accuracy"])
    return {"checkpoint": str(chosen[1]), "step": chosen[0], "val_accuracy": chosen[2],
            "curve": curve, "train_s": res.wall_s, "steps_run": res.final_step,
            "step_s": res.wall_s / max(1, res.final_step), "data": str(data),
            "examples": s.cold_start_examples}


def _grpo(ctx: Context, name: str, shuffle: bool) -> dict:
    from mindxh.rl.grpo import GRPOTrainer

    r = _model_recipe(ctx)
    r.grpo.shuffle_rewards = shuffle
    out = ctx.stage_dir(name)
    trainer = GRPOTrainer(r, _tokenizer(ctx), Path(ctx.result("sft")["checkpoint"]), out, resume=True)
    res = trainer.run(validation_set(ctx))
    return {"checkpoint": str(ckpt.latest_checkpoint(out)), "steps": res.steps,
            "val_accuracy": res.accuracy, "train_s": res.wall_s, "metrics": str(out / "metrics.jsonl")}


def run_grpo(ctx: Context) -> dict:
    return _grpo(ctx, "grpo", shuffle=False)


def run_controls(ctx: Context) -> dict:
    p, results = ctx.recipe.pipeline, {}
    if p.control_shuffled_rewards:
        results["shuffled_rewards"] = _grpo(ctx, "control_shuffled", shuffle=True)
    if p.control_more_sft:
        sft, grpo = ctx.result("sft"), ctx.result("grpo")
        steps = max(1, math.ceil(grpo["train_s"] / sft["step_s"]))
        out = ctx.stage_dir("control_more_sft")
        r = _sft_recipe(ctx, Path(sft["data"]), Path(sft["checkpoint"]), out, steps)
        r.train.checkpoint_every, r.train.keep_last = steps, 1
        r.optim.warmup_steps = 0
        res = _train(r, out)
        results["more_sft"] = {"checkpoint": str(ckpt.latest_checkpoint(out)), "steps": steps,
                               "train_s": res.wall_s}
    return {"runs": results}


def run_eval(ctx: Context) -> dict:
    problems = test_set(ctx)
    out = ctx.stage_dir("eval")
    models = {"sft": ctx.result("sft")["checkpoint"]}
    if "grpo" in ctx.results:
        models["grpo"] = ctx.result("grpo")["checkpoint"]
    for name, res in ctx.results.get("controls", {}).get("runs", {}).items():
        models[f"control_{name}"] = res["checkpoint"]
    accuracy, evaluator = {}, Evaluator(ctx)
    for name, path in models.items():
        accuracy[name] = evaluator.accuracy(Path(path), problems, out / f"{name}_samples.jsonl")
        log.info("held-out accuracy of %s: %.1f%% (%d problems)", name, 100 * accuracy[name],
                 len(problems))
    return {"problems": len(problems), "accuracy": accuracy}


def run_export(ctx: Context) -> dict:
    from mindxh.export.mindir import export_mindir

    if ctx.recipe.pipeline.export_format == "none":
        return {"skipped": "pipeline.export_format is none"}
    source = ctx.results.get("grpo") or ctx.result("sft")
    out = ctx.stage_dir("export")
    r = _model_recipe(ctx)
    return export_mindir(r, Path(source["checkpoint"]), out / "model", ctx.recipe.sft.seq_len)
