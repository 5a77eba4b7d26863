"""The numbers a plan is computed from, read once from a recipe and a hardware profile, so the
memory, communication and time models take one argument and cannot disagree on a shape."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mindxh.config.hardware import GiB, HardwareProfile
from mindxh.planner.params import vocab_of

__all__ = ["DTYPE_BYTES", "Setup"]

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Setup:
    model: object  # mindxh.config.ModelConfig
    vocab: int
    seq: int
    micro_batch: int  # sequences per micro-batch
    micro_batches: int  # micro-batches per pipeline flush (1 without a pipeline)
    accum: int  # flushes per optimizer step (train.grad_accum)
    dp: int
    tp: int
    pp: int
    ep: int
    sequence_parallel: bool
    vocab_parallel: bool
    zero: str  # none | zero1 | zero2 | zero3
    recompute: str  # none | selective | full
    compute_dtype: str
    param_bytes: int
    devices_per_node: int
    profile: HardwareProfile
    max_device_memory: Optional[float]  # bytes, compile.max_device_memory

    @classmethod
    def from_recipe(cls, recipe, profile: HardwareProfile,
                    devices_per_node: Optional[int] = None) -> "Setup":
        """`devices_per_node` defaults to the recipe's, capped by the profile's scale-up domain
        (a recipe cannot put 16 devices behind one 8-way HCCS mesh)."""
        p, t = recipe.parallel, recipe.train
        m = p.micro_batches if p.pipeline > 1 else 1
        node = devices_per_node or recipe.cluster.devices_per_node
        mdm = recipe.compile.max_device_memory
        return cls(
            model=recipe.model, vocab=vocab_of(recipe.model, recipe.tokenizer.vocab_size),
            seq=t.seq_len, micro_batch=max(1, t.batch_size // m), micro_batches=m,
            accum=t.grad_accum, dp=p.data_parallel, tp=p.tensor, pp=p.pipeline, ep=p.expert,
            sequence_parallel=p.sequence_parallel, vocab_parallel=p.vocab_parallel,
            zero=p.optimizer_shard, recompute=p.recompute,
            compute_dtype=recipe.precision.compute_dtype,
            param_bytes=DTYPE_BYTES[recipe.precision.param_dtype],
            devices_per_node=min(node, profile.scale_up), profile=profile,
            max_device_memory=float(mdm.strip().upper()[:-2]) * GiB if mdm else None,
        )

    @property
    def devices(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def compute_bytes(self) -> int:
        return DTYPE_BYTES[self.compute_dtype]

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch * self.seq

    @property
    def tokens_per_step(self) -> int:
        """Global tokens per optimizer step (every data-parallel replica)."""
        return self.dp * self.accum * self.micro_batches * self.tokens_per_micro_batch

    def intra(self, group: int, stride: int) -> bool:
        """Whether a group of `group` ranks spaced `stride` apart stays in one scale-up domain.
        Ranks are laid out tensor-innermost, then data, then pipeline (Megatron's order)."""
        return group <= 1 or self.devices <= self.devices_per_node \
            or group * stride <= self.devices_per_node
