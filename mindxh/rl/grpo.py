"""The GRPO stage: sample groups, reward them by rule, update the policy; repeat.

    prompts (answers only) -> G samples each (KV-cache decoding, graph mode)
      -> rewards (answer correct + format) -> group-normalised advantages
      -> clipped policy-ratio objective (+ k3 KL to the frozen start model) -> AdamW

Every decision is seeded by (recipe seed, step), and the policy, optimiser and problem
cursor are checkpointed, so a resumed run continues exactly where it stopped.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mindxh.checkpoint import store as ckpt
from mindxh.config import Recipe, recipe_to_yaml
from mindxh.rl.rollout import build_batch, group_advantages, shuffle_rewards
from mindxh.tasks.arith import (
    Problem,
    arith_reward,
    greedy_accuracy,
    is_correct,
    prompt_ids,
    rl_problems,
)
from mindxh.tokenizer import Tokenizer
from mindxh.train.metrics import MetricsLog, peak_rss_mb

log = logging.getLogger(__name__)

@dataclass
class GRPOResult:
    output_dir: Path
    steps: int
    accuracy: float | None  # validation accuracy after the last step
    wall_s: float


class GRPOTrainer:
    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, init_from: Path, output_dir: Path,
                 resume: bool = False):
        self.r, self.g = recipe, recipe.grpo
        self.tok = tokenizer
        self.init_from = Path(init_from)
        self.out = Path(output_dir)
        self.resume = resume
        self.row_len = recipe.sft.seq_len

    def _build(self) -> None:
        from mindxh.generate.generator import Generator
        from mindxh.models.llama.model import build_model
        from mindxh.rl.objective import GRPOLoss, GRPOStep, TokenLogProbs
        from mindxh.train.optim import AdamW

        r, g = self.r, self.g
        self.model = build_model(r.model, r.seed)
        ckpt.load_model_weights(self.model, self.init_from)
        self.ref_logprobs = None
        if g.kl_beta > 0:
            ref = build_model(r.model, r.seed)
            ckpt.load_model_weights(ref, self.init_from)
            ref.set_grad(False)
            for p in ref.get_parameters():
                p.requires_grad = False
            self.ref_logprobs = TokenLogProbs(ref)
        optim = replace(r.optim, lr=g.lr, warmup_steps=g.warmup_steps, min_lr_ratio=1.0,
                        weight_decay=0.0)
        self.optimizer = AdamW(self.model.trainable_params(), optim, g.steps * g.epochs_per_batch)
        self.step_cell = GRPOStep(GRPOLoss(self.model, g.clip_eps, g.kl_beta), self.optimizer)
        self.logprobs = TokenLogProbs(self.model)
        self.generator = Generator(self.model, self.tok, g.prompts_per_step * g.group_size,
                                   self.row_len + 1)

    # -- checkpoints --------------------------------------------------------
    def _save(self, step: int) -> None:
        model = {n: p.asnumpy() for n, p in self.model.parameters_and_names()}
        optim = {n: p.asnumpy() for n, p in self.optimizer.state_parameters()}
        state = {"problem_index": self._next_index, "init_from": str(self.init_from)}
        ckpt.save_checkpoint(self.out, step, model, optim, state, recipe_to_yaml(self.r), keep_last=2)

    def _restore(self, path: Path) -> int:
        state = ckpt.load_checkpoint(path)
        ckpt.assign_tensors(state.model, self.model.parameters_and_names(), path / ckpt.MODEL_FILE)
        ckpt.assign_tensors(state.optimizer, self.optimizer.state_parameters(),
                            path / ckpt.OPTIMIZER_FILE)
        self._next_index = int(state.state["problem_index"])
        log.info("GRPO resumed from %s (step %d)", path, state.step)
        return state.step

    # -- one step -----------------------------------------------------------
    def _next_problems(self) -> list[Problem]:
        problems, self._next_index = rl_problems(self.r.seed, self.r.sft.level, self._next_index,
                                                 self.g.prompts_per_step)
        return problems

    def _sample(self, problems: list[Problem], step: int):
        from mindxh.generate.sampling import SamplingConfig

        g = self.g
        prompts = [prompt_ids(self.tok, p) for p in problems for _ in range(g.group_size)]
        cfg = SamplingConfig(max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                             top_p=g.top_p, seed=self.r.seed * 1_000_003 + step)
        return prompts, self.generator.generate(prompts, cfg)

    def _step(self, step: int) -> dict:
        import mindspore as ms

        g = self.g
        t0 = time.perf_counter()
        problems = self._next_problems()
        prompts, completions = self._sample(problems, step)
        t1 = time.perf_counter()
        answers = [p.answer for p in problems for _ in range(g.group_size)]
        rewards = np.array([arith_reward(c.text, a, g.format_weight)
                            for c, a in zip(completions, answers)], np.float64)
        correct = np.array([is_correct(c.text, a) for c, a in zip(completions, answers)])
        grouped = rewards.reshape(len(problems), g.group_size)
        if g.shuffle_rewards:
            grouped = shuffle_rewards(grouped, np.random.default_rng([self.r.seed, step]))
        adv, kept = group_advantages(grouped, g.skip_uniform_groups)
        batch = build_batch(prompts, [c.ids for c in completions], adv, kept, self.row_len)
        ids, tgt = ms.Tensor(batch.input_ids), ms.Tensor(batch.targets)
        mask, advantages = ms.Tensor(batch.mask), ms.Tensor(batch.advantages)
        old = self.logprobs(ids, tgt)
        ref = self.ref_logprobs(ids, tgt) if self.ref_logprobs is not None else old
        stats = None
        if kept.any():
            for _ in range(g.epochs_per_batch):
                stats = [float(x.asnumpy().reshape(-1)[0])
                         for x in self.step_cell(ids, tgt, mask, advantages, old, ref)]
        t2 = time.perf_counter()
        lengths = [len(c.ids) for c in completions]
        record = {"step": step + 1, "reward_mean": float(rewards.mean()),
                  "reward_std": float(rewards.std()), "accuracy": float(correct.mean()),
                  "response_len": float(np.mean(lengths)), "groups_used": int(kept.sum()),
                  "sample_s": round(t1 - t0, 3), "update_s": round(t2 - t1, 3),
                  "peak_rss_mb": round(peak_rss_mb(), 1)}
        if stats is not None:
            if not stats[5]:
                raise RuntimeError(f"GRPO step {step + 1}: non-finite loss or gradient; lower grpo.lr")
            record.update(loss=stats[0], kl=stats[1], clip_fraction=stats[2], grad_norm=stats[3],
                          lr=stats[4])
        return record

    def validate(self, problems: list[Problem]) -> float:
        return greedy_accuracy(self.generator, self.tok, problems, self.g.max_new_tokens)[0]

    # -- the loop -----------------------------------------------------------
    def run(self, validation: list[Problem]) -> GRPOResult:
        start = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        latest = ckpt.latest_checkpoint(self.out)
        if latest is not None and not self.resume:
            raise RuntimeError(f"{self.out} already holds GRPO checkpoints; resume or remove it")
        self._build()
        self._next_index = 0
        step = self._restore(latest) if latest is not None else 0
        metrics = MetricsLog(self.out / "metrics.jsonl", resume_step=step if latest else None)
        accuracy = None
        if step == 0:
            accuracy = self.validate(validation)
            metrics.write({"step": 0, "val_accuracy": accuracy})
            log.info("GRPO step 0: validation accuracy %.1f%%", 100 * accuracy)
        while step < self.g.steps:
            record = self._step(step)
            step += 1
            last = step == self.g.steps
            if last or (self.g.eval_every and step % self.g.eval_every == 0):
                accuracy = record["val_accuracy"] = self.validate(validation)
            metrics.write(record)
            log.info("GRPO step %d/%d | reward %.3f±%.3f | sample acc %.1f%% | len %.1f | "
                     "groups %d | kl %.4f | clip %.3f | %.1fs sample + %.1fs update%s",
                     step, self.g.steps, record["reward_mean"], record["reward_std"],
                     100 * record["accuracy"], record["response_len"], record["groups_used"],
                     record.get("kl", 0.0), record.get("clip_fraction", 0.0), record["sample_s"],
                     record["update_s"],
                     f" | validation {100 * accuracy:.1f}%" if "val_accuracy" in record else "")
            if last or step % self.g.checkpoint_every == 0:
                self._save(step)
        return GRPOResult(self.out, step, accuracy, time.perf_counter() - start)
