"""The pretraining loop: recipe in, checkpoints and metrics out.

    tokenizer -> batch source -> model -> compiled train step -> log / eval / checkpoint

The batch source (mindxh/train/batches.py) is the embedded generator or prepared datasets;
either way the step gets packed rows with per-document positions and attention. The run
directory, resume, checkpoint cadence and metrics log are `mindxh.train.run`'s, shared
with the GRPO trainer.

Everything that decides the numbers (weights, optimizer moments, step counter, data
position) lives in checkpoints, so `--resume` after any crash, `kill -9` included,
continues bitwise identically on CPU.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mindxh.config import Recipe, recipe_to_yaml
from mindxh.data.loader import DataError
from mindxh.data.packing import IGNORE
from mindxh.errors import MindxhError
from mindxh.models.accounting import mfu, training_flops_per_token
from mindxh.tokenizer import Tokenizer
from mindxh.train import runtime, warmstart
from mindxh.train.batches import MODEL_INPUTS, BatchSource, SampleLog, heldout_batches, train_source
from mindxh.train.metrics import peak_rss_mb
from mindxh.train.progress import Progress
from mindxh.train.run import Run, RunDir, TrainingError, holds_lock, release_lock
from mindxh.utils.flops import is_probed, resolve_peak, revise_cpu_peak
from mindxh.utils.fsio import atomic_write

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "Trainer", "TrainingError", "prepare_tokenizer"]


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
    steps_run: int = 0  # steps this call trained (0: the run had already reached max_steps)


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
    from mindxh.data.corpus import corpus_texts
    from mindxh.tokenizer import train_from_texts

    log.info("training a %d-token %s tokenizer on %d synthetic documents", cfg.vocab_size,
             cfg.model_type, cfg.train_documents)
    texts = corpus_texts(recipe.seed, "train", recipe.data.levels, cfg.train_documents,
                         recipe.data.tasks)
    return train_from_texts(texts, output_dir / "tokenizer", cfg.vocab_size, cfg.model_type)


def _resolve(recipe: Recipe, tok: Tokenizer) -> Recipe:
    """The recipe this run trains with: `model.vocab_size` null follows the tokenizer. A copy,
    so the caller's recipe (a value it may reuse) is never changed."""
    vocab = recipe.model.vocab_size
    if vocab is None:
        return replace(recipe, model=replace(recipe.model, vocab_size=tok.vocab_size))
    if vocab < tok.vocab_size:
        raise TrainingError(f"model.vocab_size={vocab} is smaller than the tokenizer's {tok.vocab_size}")
    return recipe


@dataclass(frozen=True)
class _Cells:
    """The model and the compiled cells that train it; `accumulate` only with grad_accum > 1."""

    model: Any
    params: dict[str, int]
    loss_cell: Any
    optimizer: Any
    step_cell: Any
    accumulate: Any

    @classmethod
    def build(cls, r: Recipe) -> _Cells:
        from mindxh.models.accounting import count_parameters
        from mindxh.models.llama.model import LossCell, build_model
        from mindxh.parallel.context import needs_semi_auto
        from mindxh.parallel.parallelize import apply_plan
        from mindxh.parallel.pipeline import microbatching
        from mindxh.train.optim import AdamW
        from mindxh.train.precision import apply_compute_dtype, loss_scaler
        from mindxh.train.step import AccumulateStep, ApplyStep, TrainStep

        model = build_model(r.model, r.seed)
        apply_compute_dtype(model, r.precision.compute_dtype)  # before anything compiles it
        if needs_semi_auto(r.parallel):  # Ascend only: runtime.configure refuses it on CPU
            apply_plan(model, r)  # shard strategies, pipeline stages, recompute, to the model
        params = count_parameters(model)
        loss_cell = LossCell(model)
        optimizer = AdamW(model.trainable_params(), r.optim, r.train.max_steps,
                          loss_scaler(r.precision))
        # semi-auto parallel inserts the gradient reductions itself: no explicit data-parallel mean
        dp = 1 if needs_semi_auto(r.parallel) else r.parallel.data_parallel
        micro = microbatching(r.parallel)  # pipeline parallel: the step wraps the loss cell
        weighted = not needs_semi_auto(r.parallel)  # see train.step: not verified on Ascend
        if r.train.grad_accum == 1:
            return cls(model, params, loss_cell, optimizer,
                       TrainStep(loss_cell, optimizer, dp, micro, weighted), None)
        accumulate = AccumulateStep(loss_cell, optimizer, r.train.grad_accum, dp, micro, weighted)
        return cls(model, params, loss_cell, optimizer, ApplyStep(accumulate, optimizer), accumulate)


@dataclass(frozen=True)
class _Session:
    """Everything one `Trainer.run` needs, built whole before its first step."""

    recipe: Recipe  # resolved: model.vocab_size is set
    run: Run
    cells: _Cells
    source: BatchSource
    eval_batches: list
    samples: SampleLog
    flops_per_token: float
    peak: float
    moe: Any  # train.moe_balance.MoEMonitor: bias balancing and routing metrics; None if dense

    @classmethod
    def open(cls, recipe: Recipe, out: Path, resume: bool) -> _Session:
        run_dir = RunDir.open(out, recipe, resume)
        latest = run_dir.latest
        if recipe.train.init_from and latest is None:  # before the tokenizer is trained
            try:
                warmstart.resolve(recipe.train.init_from)
            except warmstart.InitFromError as exc:
                raise TrainingError(str(exc)) from None
        if not run_dir.lead:
            runtime.barrier()  # rank 0 trains or checks the tokenizer first; the others load it
        tok = prepare_tokenizer(recipe, out)
        if run_dir.lead:
            runtime.barrier()
        r = _resolve(recipe, tok)
        recipe_text = recipe_to_yaml(r)
        try:  # data and init_from problems (missing, damaged, mismatched) surface before compute
            source = train_source(r, tok, run_dir.rank)
            # every rank evaluates the whole global batch, so all report the same held-out loss
            eval_batches = heldout_batches(r, tok)
        except (DataError, warmstart.InitFromError) as exc:
            raise TrainingError(str(exc)) from None
        cells = _Cells.build(r)
        _initial_weights(r, latest, cells.model, tok)
        run = run_dir.start(recipe_text, cells.model, cells.optimizer,
                            lambda state: _load_state(source, state))
        # only once the checkpoint fits (a refused resume leaves the run's own), and only if
        # there is something to train (a finished run keeps the recipe it was trained with)
        if run_dir.lead and run.step < r.train.max_steps:
            atomic_write(out / "recipe.yaml", recipe_text.encode())
        if run.resumed:
            log.info("resumed from %s (step %d)", latest, run.step)
        samples = SampleLog(out, run_dir.rank, run.step if run.resumed else None)
        flops_per_token = training_flops_per_token(r.model, cells.params, r.train.seq_len)
        peak, peak_source = resolve_peak(r.metrics.peak_device(r.compile.device),
                                         r.metrics.peak_dtype(r.precision))
        log.info("model: %s parameters (%s non-embedding); %.3g FLOPs/token; peak %.3g FLOP/s (%s)",
                 f"{cells.params['total']:,}", f"{cells.params['non_embedding']:,}",
                 flops_per_token, peak, peak_source)
        from mindxh.train.moe_balance import monitor

        return cls(r, run, cells, source, eval_batches, samples, flops_per_token, peak,
                   monitor(cells.model, r.parallel.data_parallel))

    def state(self) -> dict:
        """The trainer state a checkpoint holds beside the tensors: data position and RNG."""
        import mindspore as ms

        return {"data": self.source.state_dict(), "rng": ms.get_rng_state().asnumpy().tolist(),
                "seed": self.recipe.seed}

    def _step_inputs(self, step: int, micro_batches: int, weighted: bool) -> list[list]:
        """This rank's next micro-batches of the step as the step cells' inputs (see
        batches.MODEL_INPUTS); `weighted` (step.TokenWeighted) appends the step's loss tokens
        on this rank to each."""
        import mindspore as ms

        batches = [self.source.next_batch() for _ in range(micro_batches)]
        for batch in batches:
            self.samples.record(step, batch)
        inputs = [[ms.Tensor(b[name]) for name in MODEL_INPUTS] for b in batches]
        if weighted:
            tokens = ms.Tensor(float(sum(int((b["labels"] != IGNORE).sum()) for b in batches)),
                               ms.float32)
            inputs = [i + [tokens] for i in inputs]
        return inputs

    def one_step(self, step: int) -> tuple[float, float, float, bool]:
        """Optimizer step number `step` (1-based): (loss, grad_norm, lr, ok)."""
        import mindspore as ms

        c, accum = self.cells, self.recipe.train.grad_accum
        if accum == 1:
            loss, norm, lr, ok = c.step_cell(*self._step_inputs(step, 1, c.step_cell.weighted)[0])
            return float(loss.asnumpy()), float(norm.asnumpy()), float(lr.asnumpy()), bool(ok.asnumpy())
        losses = [float(c.accumulate(*inputs).asnumpy())
                  for inputs in self._step_inputs(step, accum, c.accumulate.weighted)]
        mean = float(np.mean(np.asarray(losses, np.float32)))
        norm, lr, ok = c.step_cell(ms.Tensor(mean, ms.float32))
        return mean, float(norm.asnumpy()), float(lr.asnumpy()), bool(ok.asnumpy())

    def evaluate(self) -> float | None:
        """Mean loss on held-out rows: data.eval_dataset, or synthetic problems never trained on."""
        import mindspore as ms

        if not self.eval_batches:
            return None
        losses = [float(self.cells.loss_cell(*[ms.Tensor(b[name]) for name in MODEL_INPUTS]).asnumpy())
                  for b in self.eval_batches]
        return float(np.mean(losses))


def _initial_weights(r: Recipe, latest: Path | None, model, tok: Tokenizer) -> None:
    """train.init_from's weights when there is no checkpoint of this run to resume (which
    `RunDir.start` restores); otherwise the seeded init stands."""
    init_from = r.train.init_from
    if not init_from:
        return
    if latest is not None:
        log.info("train.init_from is not applied: resuming this run's own checkpoint")
        return
    try:
        warmstart.load_weights(init_from, model.parameters_and_names(), tok.sha256)
    except warmstart.InitFromError as exc:
        raise TrainingError(str(exc)) from None


def _checked_peak(peak: float, achieved: float, probed: bool) -> tuple[float, bool]:
    """(peak, whether it may still be revised). A cached CPU probe measured under load reads
    low, so the first time a run beats it (MFU > 100%) it is probed again, once per run; a
    table peak (Ascend, GPU) is never revised."""
    if not probed or achieved <= peak:
        return peak, probed
    revised = revise_cpu_peak(achieved)
    if achieved > revised:
        log.warning("MFU above 100%% (%.3g FLOP/s vs a %.3g FLOP/s GEMM probe): the GEMM "
                    "probe is not this machine's practical peak", achieved, revised)
    return revised, False


def _load_state(source: BatchSource, state: dict) -> None:
    import mindspore as ms

    source.load_state_dict(state["data"])
    ms.set_rng_state(ms.Tensor(np.asarray(state["rng"], np.uint8)))


class Trainer:
    """Pretraining (and SFT, via train.init_from) of one recipe into `output_dir`; `run()`
    builds everything before the first step, so the loop only reads built parts."""

    def __init__(self, recipe: Recipe, output_dir: str | Path, resume: bool = False,
                 show_progress: bool = True,
                 on_checkpoint: Callable[[int, Path | None], bool] | None = None):
        self.recipe = recipe
        self.out = Path(output_dir)
        self.resume = resume
        self.show_progress = show_progress
        # (step, checkpoint path or None off rank 0) -> True stops the run there: SFT's early
        # stopping judges checkpoints as they come (same answer on every rank; no training RNG)
        self.on_checkpoint = on_checkpoint

    def run(self) -> TrainResult:
        created = None  # the outermost folder of output_dir that this call will make
        for folder in (self.out.absolute(), *self.out.absolute().parents):
            if folder.exists():
                break
            created = folder
        self._opened = False
        try:
            return self._run()
        except MindxhError:  # refused before the first step: leave no folder this call made
            # (only once it held the run's lock: a folder another run made meanwhile is theirs)
            if created is not None and not self._opened and holds_lock(self.out):
                shutil.rmtree(created, ignore_errors=True)
            raise
        finally:
            release_lock(self.out)

    def _run(self) -> TrainResult:
        from mindxh.train.precision import StepGuard  # (mindspore: not at module import)

        start_wall = time.perf_counter()
        s = _Session.open(self.recipe, self.out, self.resume)
        self._opened = True
        r, t, run = s.recipe, s.recipe.train, s.run
        guard = StepGuard(s.cells.optimizer.loss_scaler)  # reads the restored loss scale
        step = run.step
        if step >= t.max_steps:
            log.info("nothing to do: the run already reached train.max_steps=%d", t.max_steps)
        lead = run.dir.lead
        tokens_per_step = t.batch_size * t.seq_len * t.grad_accum * r.parallel.data_parallel
        progress = Progress(r.name, t.max_steps, step, bar=self.show_progress and lead)
        loss, eval_loss = float("nan"), None
        steady_tokens, steady_time = 0, 0.0  # excludes this process's first step (compilation)
        compiled = False
        interval_tokens, interval_time = 0, 0.0
        peak = s.peak
        probed = is_probed(r.metrics.peak_device(r.compile.device))  # GEMM probe, not a table
        try:
            while step < t.max_steps:
                t0 = time.perf_counter()
                loss, norm, lr, ok = s.one_step(step + 1)
                if ok and s.moe is not None:  # DeepSeek-V3's expert-bias update, applied steps only
                    s.moe.after_step()
                dt = time.perf_counter() - t0
                guard.check(ok, loss, norm, step + 1, "Lower optim.lr or check the data.")
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
                    peak, probed = _checked_peak(peak, tps * s.flops_per_token, probed)
                    record = {"step": step, "loss": loss, "lr": lr, "grad_norm": norm,
                              "tokens_per_s": tps, "mfu": mfu(tps, s.flops_per_token, peak),
                              "tokens": step * tokens_per_step, "peak_rss_mb": round(peak_rss_mb(), 1),
                              **guard.metrics(),  # loss_scale, skipped_steps with loss scaling
                              **(s.moe.metrics() if s.moe is not None else {})}  # expert load
                    if eval_now:
                        eval_loss = record["eval_loss"] = s.evaluate()
                    if lead:
                        run.log_metrics(record)
                        progress.report(record)
                    interval_tokens, interval_time = 0, 0.0
                if last or step % t.checkpoint_every == 0:
                    saved = run.save(step, s.state)
                    if self.on_checkpoint is not None and self.on_checkpoint(step, saved):
                        log.info("stopped at step %d of %d: on_checkpoint asked to", step, t.max_steps)
                        break
        finally:
            progress.close()
        tps = steady_tokens / steady_time if steady_time else 0.0
        peak, probed = _checked_peak(peak, tps * s.flops_per_token, probed)
        return TrainResult(self.out, step, loss, eval_loss, tps, mfu(tps, s.flops_per_token, peak),
                           time.perf_counter() - start_wall, s.cells.params, step - run.step)
