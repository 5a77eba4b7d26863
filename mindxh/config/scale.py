"""Recipe sections for running at scale: the parallel plan, Ascend graph compilation, the
precision policy and the cluster the plan is for.

Names follow what mindformers users already write (`parallel_config.model_parallel` is
`parallel.tensor` here, `micro_batch_num` is `parallel.micro_batches`, `context.max_device_memory`
is `compile.max_device_memory`...); docs/scale-out.md has the full mapping. What runs where:
data parallel runs anywhere (msrun, CPU included); tensor, pipeline, expert and sequence
parallel compile only on Ascend (MindSpore semi-auto parallel refuses the CPU backend), so
on CPU they are checked (shapes, strategies, memory) but not executed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional

from mindxh.config.errors import InvalidValue
from mindxh.config.errors import require as _require

__all__ = ["ClusterConfig", "CompileConfig", "ParallelConfig", "PrecisionConfig",
           "parallel_problems"]


@dataclass
class CompileConfig:
    """How MindSpore executes: `graph` (compiled, the fast path) or `pynative` (debug), and the
    Ascend graph-compilation settings; on CPU only `enable_graph_kernel` (with
    `graph_kernel_flags`) is read: MindSpore's AKG fusion, opt-in (docs/performance.md)."""

    mode: Literal["graph", "pynative"] = "graph"
    jit_level: Literal["O0", "O1", "O2"] = "O0"
    device: Literal["CPU", "Ascend", "GPU"] = "CPU"
    max_device_memory: Optional[str] = None  # Ascend: e.g. "58GB" (leave room for HCCL buffers)
    memory_optimize_level: Literal["O0", "O1"] = "O0"  # O1: memory reuse over speed
    precision_mode: Optional[str] = None  # Ascend ascend_config.precision_mode, e.g. must_keep_origin_dtype
    enable_graph_kernel: bool = False  # graph-kernel fusion
    graph_kernel_flags: Optional[str] = None  # e.g. "--opt_level=2"

    def check(self) -> None:
        if self.max_device_memory is not None:
            text = self.max_device_memory.strip().upper()  # MindSpore's own pattern, then > 0
            ok = re.fullmatch(r"([1-9][0-9]*(\.[0-9]*)?|0\.[0-9]*)GB", text) is not None
            ok = ok and float(text[:-2]) > 0
            _require(ok, "max_device_memory", f"must look like '58GB', got {self.max_device_memory!r}")
        _require(self.precision_mode in (None, *PRECISION_MODES), "precision_mode",
                 f"must be one of {', '.join(PRECISION_MODES)} (or null), got {self.precision_mode!r}")
        _require(self.graph_kernel_flags is None or self.enable_graph_kernel, "graph_kernel_flags",
                 "is only read when compile.enable_graph_kernel is true")


# the precision modes MindSpore 2.10 accepts (set_context ascend_config.precision_mode and
# device_context.ascend.op_precision.precision_mode); CANN's force_lowerprecision is not among
# them (tests/test_parallel_context.py checks this list against MindSpore)
PRECISION_MODES = ("force_fp16", "allow_fp32_to_fp16", "allow_mix_precision", "must_keep_origin_dtype",
                   "force_fp32", "allow_fp32_to_bf16", "allow_mix_precision_fp16",
                   "allow_mix_precision_bf16")


@dataclass
class PrecisionConfig:
    """Mixed precision: matmuls in `compute_dtype`, master weights and optimizer in float32.
    float16 needs loss scaling (its range underflows small gradients); bfloat16 does not,
    but has no CPU kernels, so on CPU use float16."""

    compute_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    param_dtype: Literal["float32"] = "float32"  # master weights
    loss_scale: Literal["none", "static", "dynamic"] = "none"
    loss_scale_value: float = 65536.0  # initial (dynamic) or fixed (static) scale
    loss_scale_factor: float = 2.0  # dynamic: divide on overflow, multiply after a clean window
    loss_scale_window: int = 1000  # dynamic: clean steps before the scale grows

    def check(self) -> None:
        _require(self.loss_scale_value >= 1, "loss_scale_value", "must be >= 1")
        _require(self.loss_scale_factor > 1, "loss_scale_factor", "must be > 1")
        _require(self.loss_scale_window >= 1, "loss_scale_window", "must be >= 1")


@dataclass
class ParallelConfig:
    """How the model is split over devices: data x tensor x pipeline devices in all."""

    data_parallel: int = 1
    tensor: int = 1  # Megatron-style: heads, MLP width (and vocab) split over `tensor` devices
    pipeline: int = 1  # stages; layers split evenly
    micro_batches: int = 1  # pipeline micro-batches per step (>= pipeline keeps the bubble small)
    expert: int = 1  # MoE experts split over this many data-parallel ranks
    sequence_parallel: bool = False  # norms/dropout activations split along the sequence (needs tensor > 1)
    vocab_parallel: bool = False  # embedding and output head split by vocabulary over `tensor`
    optimizer_shard: Literal["none", "zero1", "zero2", "zero3"] = "none"  # over data parallel
    recompute: Literal["none", "selective", "full"] = "none"  # activation recomputation per layer

    @property
    def devices(self) -> int:
        return self.data_parallel * self.tensor * self.pipeline

    def check(self) -> None:
        for key in ("data_parallel", "tensor", "pipeline", "micro_batches", "expert"):
            _require(getattr(self, key) >= 1, key, "must be >= 1")
        _require(not self.sequence_parallel or self.tensor > 1, "sequence_parallel",
                 "splits activations over the tensor-parallel group: needs parallel.tensor > 1")
        _require(not self.vocab_parallel or self.tensor > 1, "vocab_parallel",
                 "splits the vocabulary over the tensor-parallel group: needs parallel.tensor > 1")


@dataclass
class ClusterConfig:
    """The machines a plan is for; `mindxh plan` reads it (hardware profiles are in
    mindxh/config/hardware.py)."""

    hardware: str = "cpu"  # a profile: 910B, 910B3, 910C, H100, H800, H20, A100, cpu...
    devices: Optional[int] = None  # null: what parallel needs (data x tensor x pipeline)
    devices_per_node: int = 8  # one scale-up domain (HCCS / NVLink)

    def check(self) -> None:
        _require(self.devices is None or self.devices >= 1, "devices", "must be >= 1 (or null)")
        _require(self.devices_per_node >= 1, "devices_per_node", "must be >= 1")


def parallel_problems(recipe) -> list[InvalidValue]:
    """Every rule the recipe's parallel plan breaks (all of them, not the first), each with
    the full dotted key to blame."""
    p, m, t = recipe.parallel, recipe.model, recipe.train
    rules: list[tuple[bool, str, str]] = []
    if p.tensor > 1:
        rules += [
            (m.num_heads % p.tensor == 0, "parallel.tensor",
             f"tensor={p.tensor} does not divide model.num_heads={m.num_heads}"),
            (m.num_kv_heads % p.tensor == 0, "parallel.tensor",
             f"tensor={p.tensor} does not divide model.num_kv_heads={m.num_kv_heads}"),
            (m.intermediate_size % p.tensor == 0, "parallel.tensor",
             f"tensor={p.tensor} does not divide model.intermediate_size={m.intermediate_size}"),
        ]
        # a null model.vocab_size follows the tokenizer: the one trained is tokenizer.vocab_size
        vocab, key = ((m.vocab_size, "model.vocab_size") if m.vocab_size is not None else
                      (recipe.tokenizer.vocab_size, "tokenizer.vocab_size")
                      if recipe.tokenizer.path is None else (None, None))
        if p.vocab_parallel and vocab is not None:
            rules.append((vocab % p.tensor == 0, "parallel.vocab_parallel",
                          f"tensor={p.tensor} does not divide {key}={vocab}"))
        if p.sequence_parallel:
            rules.append((t.seq_len % p.tensor == 0, "parallel.sequence_parallel",
                          f"tensor={p.tensor} does not divide train.seq_len={t.seq_len}"))
    if p.pipeline > 1:
        rules += [
            (m.num_layers % p.pipeline == 0, "parallel.pipeline",
             f"pipeline={p.pipeline} does not divide model.num_layers={m.num_layers}"),
            (t.batch_size % p.micro_batches == 0, "parallel.micro_batches",
             f"micro_batches={p.micro_batches} does not divide train.batch_size={t.batch_size} "
             f"(the global batch is data_parallel x batch_size; each rank's batch is split "
             f"into micro-batches)"),
            (p.micro_batches >= p.pipeline, "parallel.micro_batches",
             f"micro_batches={p.micro_batches} < pipeline={p.pipeline}: some stages would idle "
             f"every step"),
        ]
    elif p.micro_batches > 1:
        rules.append((False, "parallel.micro_batches",
                      "micro-batches are pipeline micro-batches: set parallel.pipeline > 1 or use "
                      "train.grad_accum"))
    moe = m.moe
    if moe.enabled and p.tensor > 1:
        width = moe.expert_width(m.intermediate_size)
        rules.append((width % p.tensor == 0, "parallel.tensor",
                      f"tensor={p.tensor} does not divide the experts' width {width} "
                      f"(model.moe.expert_intermediate_size)"))
    if p.expert > 1:
        experts = moe.num_experts
        rules.append((experts > 0, "parallel.expert",
                      f"expert={p.expert} needs a mixture-of-experts model (model.moe.num_experts)"))
        if experts:
            rules.append((experts % p.expert == 0, "parallel.expert",
                          f"expert={p.expert} does not divide model.moe.num_experts={experts}"))
        rules.append((p.data_parallel % p.expert == 0, "parallel.expert",
                      f"expert={p.expert} must divide data_parallel={p.data_parallel} (experts are "
                      f"split over data-parallel ranks)"))
    if p.optimizer_shard != "none":
        rules.append((p.data_parallel > 1, "parallel.optimizer_shard",
                      f"{p.optimizer_shard} shards over data parallel: needs data_parallel > 1"))
    c = recipe.cluster
    if c.devices is not None:
        rules.append((c.devices == p.devices, "cluster.devices",
                      f"devices={c.devices} but data_parallel x tensor x pipeline = "
                      f"{p.data_parallel} x {p.tensor} x {p.pipeline} = {p.devices}"))
    prec, dev = recipe.precision, recipe.compile.device
    rules += [
        (not (prec.compute_dtype == "bfloat16" and dev == "CPU"), "precision.compute_dtype",
         "bfloat16 has no CPU kernels in MindSpore; use float16 (with precision.loss_scale: "
         "dynamic) on CPU"),
        (prec.compute_dtype != "float16" or prec.loss_scale != "none", "precision.loss_scale",
         "float16 compute needs loss scaling (static or dynamic): small gradients underflow"),
    ]
    return [InvalidValue(key, message) for ok, key, message in rules if not ok]
