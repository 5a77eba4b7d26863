"""The pretraining loop: recipe in, checkpoints and metrics out.

    tokenizer -> batch source -> model -> compiled train step -> log / eval / checkpoint

The batch source (mindxh/train/batches.py) is the embedded generator or prepared datasets;
either way the step gets packed rows with per-document positions and attention.

Everything that decides the numbers (weights, optimizer moments, step counter, data
position) lives in checkpoints, so `--resume` after any crash, `kill -9` included,
continues bitwise identically on CPU.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mindxh.checkpoint import store as ckpt
from mindxh.config import Recipe, recipe_to_yaml
from mindxh.data.loader import DataError
from mindxh.errors import MindxhError
from mindxh.models.accounting import mfu, training_flops_per_token
from mindxh.tokenizer import Tokenizer
from mindxh.train import runtime, warmstart
from mindxh.train.batches import MODEL_INPUTS, SampleLog, heldout_batches, train_source
from mindxh.train.metrics import MetricsLog, peak_rss_mb
from mindxh.train.progress import Progress
from mindxh.utils.flops import resolve_peak

log = logging.getLogger(__name__)


class TrainingError(MindxhError, RuntimeError):
    """The run cannot go on (non-finite loss, unusable output directory...)."""


@dataclass
class TrainResult:
    output_dir: Path
    final_step: int
    final_loss: float
    eval_loss: float | None
    tokens_per_s: float
    mfu: float
    wall_s: float
    parameters: dict[str, int]


def prepare_tokenizer(recipe: Recipe, output_dir: Path) -> Tokenizer:
    """The recipe's tokenizer file, or one trained (deterministically) on the run's data."""
    try:
        return _prepare_tokenizer(recipe, output_dir)
    except ValueError as exc:  # a file that is no tokenizer, a vocabulary the corpus cannot fill
        raise TrainingError(f"tokenizer: {exc}") from None


def _prepare_tokenizer(recipe: Recipe, output_dir: Path) -> Tokenizer:
    cfg = recipe.tokenizer
    if cfg.path is not None:
        return Tokenizer.load(cfg.path)
    path = output_dir / "tokenizer.model"
    if path.exists():
        tok = Tokenizer.load(path)
        if tok.vocab_size != cfg.vocab_size:
            raise TrainingError(f"{path} has vocab_size {tok.vocab_size} but tokenizer.vocab_size="
                                f"{cfg.vocab_size}; use another --output-dir")
        return tok
    from mindxh.data.synthetic import sample_texts
    from mindxh.tokenizer import train_from_texts

    log.info("training a %d-token %s tokenizer on %d synthetic documents", cfg.vocab_size,
             cfg.model_type, cfg.train_documents)
    texts = sample_texts(recipe.seed, "train", recipe.data.levels, cfg.train_documents)
    return train_from_texts(texts, output_dir / "tokenizer", cfg.vocab_size, cfg.model_type)


class Trainer:
    def __init__(self, recipe: Recipe, output_dir: str | Path, resume: bool = False,
                 show_progress: bool = True):
        self.recipe = recipe
        self.out = Path(output_dir)
        self.resume = resume
        self.show_progress = show_progress

    # -- set-up -------------------------------------------------------------
    def _check_output_dir(self) -> Path | None:
        """Refuse to overwrite a run; return the checkpoint to resume from, if any."""
        self.out.mkdir(parents=True, exist_ok=True)
        latest = ckpt.latest_checkpoint(self.out)
        if not self.resume and (latest is not None or (self.out / "metrics.jsonl").exists()):
            held = f"checkpoints (newest: {latest.name})" if latest else "a run's metrics.jsonl"
            raise TrainingError(f"{self.out} already holds {held}; pass --resume to continue that "
                                "run, or choose another --output-dir")
        if latest is None and self.resume:
            log.warning("--resume: no checkpoint in %s, starting from step 0", self.out)
        return latest

    def _build(self):
        from mindxh.models.accounting import count_parameters
        from mindxh.models.llama.model import LossCell, build_model
        from mindxh.train.optim import AdamW
        from mindxh.train.step import AccumulateStep, ApplyStep, TrainStep

        r = self.recipe
        self.model = build_model(r.model, r.seed)
        self.params = count_parameters(self.model)
        self.loss_cell = LossCell(self.model)
        self.optimizer = AdamW(self.model.trainable_params(), r.optim, r.train.max_steps)
        dp = r.parallel.data_parallel
        if r.train.grad_accum == 1:
            self.step_cell = TrainStep(self.loss_cell, self.optimizer, dp)
        else:
            self.accumulate = AccumulateStep(self.loss_cell, self.optimizer, r.train.grad_accum, dp)
            self.step_cell = ApplyStep(self.accumulate, self.optimizer)

    def _restore(self, path: Path) -> int:
        import mindspore as ms

        state = ckpt.load_checkpoint(path)
        if state.recipe_text != recipe_to_yaml(self.recipe):
            log.warning("resuming with a recipe that differs from the checkpoint's (%s/recipe.yaml)", path)
        try:
            ckpt.assign_tensors(state.model, self.model.parameters_and_names(), path / ckpt.MODEL_FILE)
            ckpt.assign_tensors(state.optimizer, self.optimizer.state_parameters(),
                                path / ckpt.OPTIMIZER_FILE)
        except ckpt.CheckpointError as exc:
            raise TrainingError(f"{exc}; the recipe's model differs from the checkpoint's") from None
        try:
            self.source.load_state_dict(state.state["data"])
        except ValueError as exc:  # DataError, or a batcher state of another shape
            raise TrainingError(f"{path}/state.json: {exc}") from None
        ms.set_rng_state(ms.Tensor(np.asarray(state.state["rng"], np.uint8)))
        log.info("resumed from %s (step %d)", path, state.step)
        return state.step

    def _save(self, step: int) -> Path:
        import mindspore as ms

        model = {name: p.asnumpy() for name, p in self.model.parameters_and_names()}
        optim = {name: p.asnumpy() for name, p in self.optimizer.state_parameters()}
        state = {"data": self.source.state_dict(),
                 "rng": ms.get_rng_state().asnumpy().tolist(),
                 "seed": self.recipe.seed}
        return ckpt.save_checkpoint(self.out, step, model, optim, state, recipe_to_yaml(self.recipe),
                                    self.recipe.train.keep_last)

    # -- steps --------------------------------------------------------------
    def _next_inputs(self, step: int) -> list:
        """This rank's next micro-batch as the step cells' inputs (see batches.MODEL_INPUTS)."""
        import mindspore as ms

        batch = self.source.next_batch()
        self.samples.record(step, batch)
        return [ms.Tensor(batch[name]) for name in MODEL_INPUTS]

    def _one_step(self, step: int):
        """Optimizer step number `step` (1-based): (loss, grad_norm, lr, ok)."""
        import mindspore as ms

        t = self.recipe.train
        if t.grad_accum == 1:
            loss, norm, lr, ok = self.step_cell(*self._next_inputs(step))
            return float(loss.asnumpy()), float(norm.asnumpy()), float(lr.asnumpy()), bool(ok.asnumpy())
        losses = []
        for _ in range(t.grad_accum):
            losses.append(float(self.accumulate(*self._next_inputs(step)).asnumpy()))
        mean = float(np.mean(np.asarray(losses, np.float32)))
        norm, lr, ok = self.step_cell(ms.Tensor(mean, ms.float32))
        return mean, float(norm.asnumpy()), float(lr.asnumpy()), bool(ok.asnumpy())

    def evaluate(self) -> float | None:
        """Mean loss on held-out rows: data.eval_dataset, or synthetic problems never trained on."""
        import mindspore as ms

        if not self._eval_batches:
            return None
        losses = [float(self.loss_cell(*[ms.Tensor(b[name]) for name in MODEL_INPUTS]).asnumpy())
                  for b in self._eval_batches]
        return float(np.mean(losses))

    def _initial_weights(self, latest: Path | None, tok: Tokenizer) -> int:
        """This run's newest checkpoint if any, else train.init_from's weights, else the seeded
        init; returns the step to start from."""
        init_from = self.recipe.train.init_from
        if latest is not None:
            if init_from:
                log.info("train.init_from is not applied: resuming this run's own checkpoint")
            return self._restore(latest)
        if init_from:
            try:
                warmstart.load_weights(init_from, self.model.parameters_and_names(), tok.sha256)
            except warmstart.InitFromError as exc:
                raise TrainingError(str(exc)) from None
        return 0

    # -- the loop -----------------------------------------------------------
    def _setup(self) -> int:
        """Everything before the first step; returns the step to start from."""
        r = self.recipe
        latest = self._check_output_dir()
        runtime.configure(r)
        self.rank = runtime.rank()
        lead = self.rank == 0
        if lead:
            for path in ckpt.clean_stale_temporaries(self.out):
                log.warning("removed an unfinished checkpoint write: %s", path)
        else:
            runtime.barrier()  # rank 0 trains or checks the tokenizer first; the others load it
        tok = prepare_tokenizer(r, self.out)
        if lead:
            runtime.barrier()
        if r.model.vocab_size is None:
            r.model.vocab_size = tok.vocab_size
        elif r.model.vocab_size < tok.vocab_size:
            raise TrainingError(f"model.vocab_size={r.model.vocab_size} is smaller than the "
                                f"tokenizer's {tok.vocab_size}")
        if lead:
            (self.out / "recipe.yaml").write_text(recipe_to_yaml(r))
        try:  # data and init_from problems (missing, damaged, mismatched) surface before compute
            if r.train.init_from and latest is None:
                warmstart.resolve(r.train.init_from)
            self.source = train_source(r, tok, self.rank)
            # every rank evaluates the whole global batch, so all report the same held-out loss
            self._eval_batches = heldout_batches(r, tok)
        except (DataError, warmstart.InitFromError) as exc:
            raise TrainingError(str(exc)) from None
        self._build()
        step = self._initial_weights(latest, tok)
        self.samples = SampleLog(self.out, self.rank, step if latest else None)
        # rank 0 alone owns metrics.jsonl: another rank opening it would truncate rank 0's records
        self.metrics = (MetricsLog(self.out / "metrics.jsonl", resume_step=step if latest else None)
                        if lead else None)
        self.flops_per_token = training_flops_per_token(r.model, self.params, r.train.seq_len)
        self.peak, peak_source = resolve_peak(r.metrics.peak_device(r.compile.device), r.metrics.dtype)
        log.info("model: %s parameters (%s non-embedding); %.3g FLOPs/token; peak %.3g FLOP/s (%s)",
                 f"{self.params['total']:,}", f"{self.params['non_embedding']:,}",
                 self.flops_per_token, self.peak, peak_source)
        return step

    def run(self) -> TrainResult:
        r, t = self.recipe, self.recipe.train
        start_wall = time.perf_counter()
        step = self._setup()
        if step >= t.max_steps:
            log.info("nothing to do: the run already reached train.max_steps=%d", t.max_steps)
        lead = self.rank == 0
        tokens_per_step = t.batch_size * t.seq_len * t.grad_accum * r.parallel.data_parallel
        progress = Progress(r.name, t.max_steps, step, bar=self.show_progress and lead)
        loss, eval_loss = float("nan"), None
        steady_tokens, steady_time = 0, 0.0  # excludes this process's first step (compilation)
        compiled = False
        interval_tokens, interval_time = 0, 0.0
        try:
            while step < t.max_steps:
                t0 = time.perf_counter()
                loss, norm, lr, ok = self._one_step(step + 1)
                dt = time.perf_counter() - t0
                if not ok or not math.isfinite(loss):
                    raise TrainingError(f"non-finite loss ({loss}) or gradient norm ({norm}) at step "
                                        f"{step + 1}; parameters were not updated and no checkpoint "
                                        f"was written. Lower optim.lr or check the data.")
                if compiled:
                    steady_tokens += tokens_per_step
                    steady_time += dt
                compiled = True
                step += 1
                interval_tokens += tokens_per_step
                interval_time += dt
                progress.step()
                last = step == t.max_steps
                eval_now = last or (t.eval_every > 0 and step % t.eval_every == 0)
                if eval_now or step % t.log_every == 0:
                    tps = interval_tokens / interval_time
                    record = {"step": step, "loss": loss, "lr": lr, "grad_norm": norm,
                              "tokens_per_s": tps, "mfu": mfu(tps, self.flops_per_token, self.peak),
                              "tokens": step * tokens_per_step, "peak_rss_mb": round(peak_rss_mb(), 1)}
                    if eval_now:
                        eval_loss = record["eval_loss"] = self.evaluate()
                    if lead:
                        self.metrics.write(record)
                        progress.report(record)
                    interval_tokens, interval_time = 0, 0.0
                if lead and (last or step % t.checkpoint_every == 0):
                    self._save(step)
        finally:
            progress.close()
        tps = steady_tokens / steady_time if steady_time else 0.0
        return TrainResult(self.out, step, loss, eval_loss, tps, mfu(tps, self.flops_per_token, self.peak),
                           time.perf_counter() - start_wall, self.params)
