"""Typed recipe sections of the post-training stages: SFT, GRPO, evaluation, pipeline.

Kept apart from schema.py (model, data, optimiser, training loop) so each file stays
readable; the `Recipe` includes them. Defaults follow ../shared/notes/grpo-on-cpu.md,
which records what GRPO needed on a tiny model on a 2-core CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from mindxh.config.errors import require as _require


@dataclass
class SFTConfig:
    """Cold-start supervised fine-tuning on worked solutions (DeepSeek-R1's first stage)."""

    cold_start_examples: int = 1000  # worked solutions available; SFT never sees more
    level: int = 2  # synthetic difficulty of the cold-start and RL problems
    max_steps: int = 300  # the length of the lr schedule; early stopping may end SFT sooner
    batch_size: int = 32
    lr: float = 3.0e-3
    warmup_steps: int = 20
    # after warmup: cosine decay to optim.min_lr_ratio * lr over max_steps, or constant lr.
    # A checkpoint kept mid-schedule (lr still high) left GRPO room to improve; one at the end
    # of a full decay did not (shared/notes/grpo-on-cpu.md)
    schedule: Literal["cosine", "constant"] = "cosine"
    seq_len: int = 128
    eval_every: int = 50  # held-out accuracy checks (greedy) during SFT; 0 = at the end only
    eval_problems: int = 128  # held-out problems per check (validation, not the test set)
    # stop training at the first check whose validation accuracy reaches this (that checkpoint
    # is kept); 0 = off: train max_steps and keep the best check
    stop_at_accuracy: float = 0.0

    def check(self) -> None:
        _require(self.cold_start_examples > 0, "cold_start_examples", "must be > 0")
        _require(1 <= self.level <= 3, "level", "must be in 1..3")
        for key in ("max_steps", "batch_size", "seq_len", "eval_problems"):
            _require(getattr(self, key) > 0, key, "must be > 0")
        _require(self.eval_every >= 0, "eval_every", "must be >= 0 (0: at the end only)")
        _require(self.lr > 0, "lr", "must be > 0")
        _require(0.0 <= self.stop_at_accuracy <= 1.0, "stop_at_accuracy", "must be in [0, 1]")


@dataclass
class GRPOConfig:
    """Group Relative Policy Optimisation (Shao et al. 2024) with rule-checked rewards."""

    steps: int = 80
    prompts_per_step: int = 16
    group_size: int = 8  # G responses sampled per prompt
    temperature: float = 1.0  # the loss and the old log-probs use it too (same distribution)
    top_p: float = 1.0  # only 1.0: see check()
    max_new_tokens: int = 64
    lr: float = 5.0e-5
    warmup_steps: int = 0
    clip_eps: float = 0.2
    kl_beta: float = 0.0  # k3 estimator against the frozen SFT model; 0 = no reference model
    epochs_per_batch: int = 1  # optimisation passes per sampled batch (mu); 1 = ratio stays 1
    # rows per forward/backward pass of an update, gradients accumulated over the passes;
    # 0 = the whole batch (prompts_per_step * group_size rows) in one pass
    micro_batch_rows: int = 0
    format_weight: float = 0.1  # reward for the <think>..</think><answer>..</answer> shape
    skip_uniform_groups: bool = True  # a group with equal rewards carries no signal
    shuffle_rewards: bool = False  # control: rewards permuted across the batch
    eval_every: int = 20
    eval_problems: int = 128  # GRPO's validation curve: its own held-out stream, not SFT's
    checkpoint_every: int = 20

    def check(self) -> None:
        for key in ("steps", "prompts_per_step", "max_new_tokens", "epochs_per_batch",
                    "eval_problems", "checkpoint_every"):
            _require(getattr(self, key) > 0, key, "must be > 0")
        _require(self.eval_every >= 0, "eval_every", "must be >= 0 (0: at the end only)")
        _require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        _require(self.group_size >= 2, "group_size", "must be >= 2 (advantages compare a group)")
        _require(self.temperature > 0, "temperature", "must be > 0 (sampling, not greedy)")
        # the loss must score the distribution the responses were sampled from; a top-p
        # truncation set differs per position and would have to travel with the batch, so
        # it is refused rather than silently optimising the untruncated distribution
        _require(self.top_p == 1.0, "top_p", "must be 1.0: GRPO's loss uses the tempered "
                 "distribution over the whole vocabulary, and top-p sampling would optimise "
                 "a different distribution from the one sampled; lower temperature instead")
        _require(self.lr > 0, "lr", "must be > 0")
        _require(0 <= self.clip_eps < 1, "clip_eps", "must be in [0, 1)")
        _require(self.kl_beta >= 0, "kl_beta", "must be >= 0")
        _require(self.micro_batch_rows >= 0, "micro_batch_rows",
                 "must be >= 0 (0: the whole batch in one pass)")


@dataclass
class EvalConfig:
    """Held-out evaluation of the pipeline's models (greedy decoding)."""

    problems: int = 500  # held-out synthetic problems, never in any training split
    batch_size: int = 128
    max_new_tokens: int = 64

    def check(self) -> None:
        for key in ("problems", "batch_size", "max_new_tokens"):
            _require(getattr(self, key) > 0, key, "must be > 0")


@dataclass
class PipelineConfig:
    """Which stages `mindxh pipeline` runs, and the controls the report compares against."""

    stages: list[str] = None  # type: ignore[assignment]
    control_shuffled_rewards: bool = False
    control_more_sft: bool = False
    export_format: Literal["MINDIR", "none"] = "MINDIR"
    note: Optional[str] = None

    def __post_init__(self) -> None:
        if self.stages is None:
            self.stages = list(STAGES)

    def check(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        _require(not unknown, "stages", f"unknown stage(s) {unknown}; known: {list(STAGES)}")


STAGES = ("tokenizer", "pretrain", "sft", "grpo", "controls", "eval", "export")
