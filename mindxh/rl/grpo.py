"""The GRPO stage: sample groups, reward them by rule, update the policy; repeat.

    prompts (answers only) -> G samples each (KV-cache decoding, graph mode)
      -> rewards (correct + format; math checked exactly, code by hidden tests in the
         sandbox, routed by each problem's task) -> group-normalised advantages
      -> clipped policy-ratio objective (+ k3 KL to the frozen start model) -> AdamW

Every decision is seeded by (recipe seed, step), and the policy, optimiser and problem
cursor are checkpointed, so a resumed run continues exactly where it stopped. The run
directory, resume, checkpoint cadence (`grpo.checkpoint_every`, `train.keep_last`), the
non-finite guard and the metrics log are `mindxh.train.run`'s, as for pretraining.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mindxh.checkpoint import store as ckpt
from mindxh.config import Recipe, recipe_to_yaml
from mindxh.rewards.code import GradeStats
from mindxh.rewards.judge import greedy_records, rewards
from mindxh.rl.objective import GRPOStats
from mindxh.rl.rollout import (
    RolloutBatch,
    build_batch,
    group_advantages,
    micro_batches,
    shuffle_rewards,
)
from mindxh.tasks.mix import RLStream, prompt_ids
from mindxh.tokenizer import Tokenizer
from mindxh.train.metrics import peak_rss_mb
from mindxh.train.run import Run, RunDir, TrainingError, check_finite, release_lock

log = logging.getLogger(__name__)


@dataclass
class GRPOResult:
    output_dir: Path
    steps: int
    accuracy: float | None  # validation accuracy after the last step
    wall_s: float  # seconds of GRPO over every session of the run (a resume adds to them)


@dataclass(frozen=True)
class _Policy:
    """The policy, its optimiser, the frozen reference (kl_beta > 0) and the compiled cells:
    `step_cell` for an update in one pass, or `accumulate` + `apply` over micro-batches."""

    model: Any
    optimizer: Any
    step_cell: Any  # None with micro-batches
    accumulate: Any  # None without
    apply: Any
    micro_batch_rows: int
    logprobs: Any  # the old log-probs, for epochs_per_batch > 1 (None: the first pass needs none)
    ref_logprobs: Any  # None without a KL term
    generator: Any

    @classmethod
    def build(cls, r: Recipe, tok: Tokenizer, init_from: Path, row_len: int) -> _Policy:
        from mindxh.generate.generator import Generator
        from mindxh.models.llama.model import build_model
        from mindxh.rl.objective import GRPOAccumulate, GRPOLoss, GRPOStep, TokenLogProbs
        from mindxh.train.optim import AdamW
        from mindxh.train.step import ApplyStep

        g = r.grpo
        model = build_model(r.model, r.seed)
        ckpt.load_model_weights(model, init_from)
        ref_logprobs = None
        if g.kl_beta > 0:
            ref = build_model(r.model, r.seed)
            ckpt.load_model_weights(ref, init_from)
            ref.set_grad(False)
            for p in ref.get_parameters():
                p.requires_grad = False
            ref_logprobs = TokenLogProbs(ref, g.temperature)
        optim = replace(r.optim, lr=g.lr, warmup_steps=g.warmup_steps, min_lr_ratio=1.0,
                        weight_decay=0.0)
        optimizer = AdamW(model.trainable_params(), optim, g.steps * g.epochs_per_batch)
        # the loss, the old and the reference log-probs all score softmax(logits / temperature),
        # the distribution `_sample` draws from; `Completion.logprobs` are not used as the old
        # log-probs because they are of softmax(logits) (temperature 1) whatever was sampled
        loss = GRPOLoss(model, g.clip_eps, g.kl_beta, g.temperature)
        rows = g.prompts_per_step * g.group_size
        step_cell = accumulate = apply = None
        if 0 < g.micro_batch_rows < rows:
            accumulate = GRPOAccumulate(loss, optimizer)
            apply = ApplyStep(accumulate, optimizer)
        else:
            step_cell = GRPOStep(loss, optimizer)
        logprobs = TokenLogProbs(model, g.temperature) if g.epochs_per_batch > 1 else None
        generator = Generator(model, tok, rows, row_len + 1)
        return cls(model, optimizer, step_cell, accumulate, apply, g.micro_batch_rows, logprobs,
                   ref_logprobs, generator)

    def update(self, batch: RolloutBatch, epochs: int) -> GRPOStats | None:
        """`epochs` optimisation passes over `batch`; None when no row carries loss (every
        group's rewards were equal)."""
        import mindspore as ms

        if not batch.mask.any():
            return None
        pieces = [batch] if self.accumulate is None else micro_batches(batch, self.micro_batch_rows)
        inputs = [tuple(ms.Tensor(a) for a in (p.input_ids, p.targets, p.weights, p.advantages))
                  for p in pieces]
        # fixed before the first pass: the behaviour policy and the reference
        old = [None if self.logprobs is None else self.logprobs(x[0], x[1]) for x in inputs]
        ref = [None if self.ref_logprobs is None else self.ref_logprobs(x[0], x[1]) for x in inputs]
        stats = None
        for _ in range(epochs):
            if self.accumulate is None:
                stats = GRPOStats.of(self.step_cell(*inputs[0], old[0], ref[0]))
                continue
            parts = [self.accumulate(*x, o, f) for x, o, f in zip(inputs, old, ref)]
            sums = [sum(float(p[i].asnumpy()) for p in parts) for i in range(3)]
            stats = GRPOStats.of_parts(sums, self.apply(ms.Tensor(np.float32(sums[0]))))
        return stats


def _check_prompt_room(r: Recipe, tok: Tokenizer, row_len: int, validation) -> None:
    """Every prompt of the run (each step's, drawn ahead from the same stream, and the
    validation problems) leaves room for grpo.max_new_tokens within sft.seq_len + 1, checked
    before anything is built: a longer one would stop the run at its step."""
    g = r.grpo
    stream = RLStream(r.data.tasks, r.seed, r.sft.level, g.prompts_per_step)
    problems = [p for _ in range(g.steps) for p in stream.take()] + list(validation)
    if not problems:
        return
    longest = max(len(prompt_ids(tok, p)) for p in problems)
    if longest > row_len + 1 - g.max_new_tokens:
        raise TrainingError(
            f"grpo.max_new_tokens={g.max_new_tokens}: the run's longest prompt has {longest} "
            f"tokens, and prompt + completion must fit sft.seq_len + 1 = {row_len + 1}; lower "
            f"grpo.max_new_tokens to at most {row_len + 1 - longest} or raise sft.seq_len to at "
            f"least {longest + g.max_new_tokens - 1}")


@dataclass
class _Session:
    """Everything one `GRPOTrainer.run` needs, built whole before its first step; and what
    the checkpoints carry across sessions besides the weights (the problem stream's place,
    the training seconds so far, the last validation accuracy)."""

    recipe: Recipe
    tok: Tokenizer
    init_from: Path
    row_len: int
    run: Run
    policy: _Policy
    problems: RLStream
    earlier_s: float = 0.0  # training seconds of the sessions before this one
    accuracy: float | None = None  # the last validation accuracy
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, r: Recipe, tok: Tokenizer, init_from: Path, out: Path, resume: bool,
             validation: list = ()) -> _Session:
        started = time.perf_counter()  # building the policy is part of the stage's time
        run_dir = RunDir.open(out, r, resume)  # graph mode and seed, before any cell is built
        row_len = r.sft.seq_len
        _check_prompt_room(r, tok, row_len, validation)
        policy = _Policy.build(r, tok, init_from, row_len)
        problems = RLStream(r.data.tasks, r.seed, r.sft.level, r.grpo.prompts_per_step)
        restored: dict = {}

        def restore(state: dict) -> None:
            problems.load_state(state["problem_index"])
            restored.update(state)

        run = run_dir.start(recipe_to_yaml(r), policy.model, policy.optimizer, restore)
        if run.resumed:
            log.info("GRPO resumed from %s (step %d)", run_dir.latest, run.step)
        return cls(r, tok, init_from, row_len, run, policy, problems,
                   earlier_s=float(restored.get("train_s", 0.0)),
                   accuracy=restored.get("val_accuracy"), started=started)

    def train_s(self) -> float:
        """Seconds of GRPO so far, over every session (up to each one's last checkpoint)."""
        return self.earlier_s + time.perf_counter() - self.started

    def state(self) -> dict:
        return {"problem_index": self.problems.state(), "init_from": str(self.init_from),
                "train_s": round(self.train_s(), 3), "val_accuracy": self.accuracy}

    def _sample(self, problems: list, step: int):
        from mindxh.generate.sampling import SamplingConfig

        g = self.recipe.grpo
        prompts = [prompt_ids(self.tok, p) for p in problems for _ in range(g.group_size)]
        cfg = SamplingConfig(max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                             top_p=g.top_p, seed=self.recipe.seed * 1_000_003 + step)
        return prompts, self.policy.generator.generate(prompts, cfg)

    def step(self, step: int) -> dict:
        """GRPO step `step + 1`: sample, reward, update; returns its metrics record."""
        g, pol = self.recipe.grpo, self.policy
        t0 = time.perf_counter()
        problems = self.problems.take()
        prompts, completions = self._sample(problems, step)
        t1 = time.perf_counter()
        graded = GradeStats()
        reward, correct = rewards([p for p in problems for _ in range(g.group_size)],
                                  [c.text for c in completions], g.format_weight, graded)
        t_reward = time.perf_counter()
        grouped = reward.reshape(len(problems), g.group_size)
        if g.shuffle_rewards:
            grouped = shuffle_rewards(grouped, np.random.default_rng([self.recipe.seed, step]))
        adv, kept = group_advantages(grouped, g.skip_uniform_groups)
        batch = build_batch(prompts, [c.ids for c in completions], adv, kept, self.row_len)
        stats = pol.update(batch, g.epochs_per_batch)
        t2 = time.perf_counter()
        lengths = [len(c.ids) for c in completions]
        record = {"step": step + 1, "reward_mean": float(reward.mean()),
                  "reward_std": float(reward.std()), "accuracy": float(correct.mean()),
                  "response_len": float(np.mean(lengths)), "groups_used": int(kept.sum()),
                  "sample_s": round(t1 - t0, 3), "reward_s": round(t_reward - t1, 3),
                  "update_s": round(t2 - t_reward, 3), "peak_rss_mb": round(peak_rss_mb(), 1)}
        for task in dict.fromkeys(p.task for p in problems):
            mine = np.array([p.task == task for p in problems for _ in range(g.group_size)])
            record[f"accuracy_{task}"] = float(correct[mine].mean())
        if graded.programs_run:
            record.update(programs_run=graded.programs_run,
                          ms_per_program=round(graded.ms_per_program, 2))
        if stats is not None:
            check_finite(stats.ok, stats.loss, stats.grad_norm, step + 1, "Lower grpo.lr.")
            record.update(loss=stats.loss, kl=stats.kl, clip_fraction=stats.clip_fraction,
                          grad_norm=stats.grad_norm, lr=stats.lr)
        return record

    def validate(self, problems: list) -> float:
        g = self.recipe.grpo
        return greedy_records(self.policy.generator, self.tok, problems, g.max_new_tokens)[0]


class GRPOTrainer:
    """GRPO from the SFT checkpoint `init_from` into `output_dir`; `run()` builds everything
    (run directory, policy, problem stream) before the first step."""

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, init_from: Path, output_dir: Path,
                 resume: bool = False):
        self.r, self.g = recipe, recipe.grpo
        self.tok = tokenizer
        self.init_from = Path(init_from)
        self.out = Path(output_dir)
        self.resume = resume
        self.row_len = recipe.sft.seq_len

    def run(self, validation: list) -> GRPOResult:
        try:
            return self._run(validation)
        finally:
            release_lock(self.out)

    def _run(self, validation: list) -> GRPOResult:
        s = _Session.open(self.r, self.tok, self.init_from, self.out, self.resume, validation)
        run, g = s.run, self.g
        step = run.step
        if step == 0:
            s.accuracy = s.validate(validation)
            run.log_metrics({"step": 0, "val_accuracy": s.accuracy})
            log.info("GRPO step 0: validation accuracy %.1f%%", 100 * s.accuracy)
        while step < g.steps:
            record = s.step(step)
            step += 1
            last = step == g.steps
            if last or (g.eval_every and step % g.eval_every == 0):
                accuracy = s.accuracy = record["val_accuracy"] = s.validate(validation)
            run.log_metrics(record)
            log.info("GRPO step %d/%d | reward %.3f±%.3f | sample acc %.1f%% | len %.1f | "
                     "groups %d | kl %.4f | clip %.3f | %.1fs sample + %.1fs reward + %.1fs update%s",
                     step, g.steps, record["reward_mean"], record["reward_std"],
                     100 * record["accuracy"], record["response_len"], record["groups_used"],
                     record.get("kl", 0.0), record.get("clip_fraction", 0.0), record["sample_s"],
                     record["reward_s"], record["update_s"],
                     f" | validation {100 * accuracy:.1f}%" if "val_accuracy" in record else "")
            if last or step % g.checkpoint_every == 0:
                run.save(step, s.state)
        return GRPOResult(self.out, step, s.accuracy, s.train_s())
