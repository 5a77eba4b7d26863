"""Step time, tokens/s per device and MFU from a roofline of the slowest pipeline stage.

Per micro-batch on that stage:
    compute  = 6*P FLOPs per token for the stage's matmul weights P (tensor-split; an MoE
               layer's routed experts at k * capacity_factor experts per token) at
               peak x gemm_efficiency, plus 12*a*d*s per layer for attention scores (the full
               square, as in mindxh.models.accounting) at peak x attention_efficiency (a
               fused attention kernel runs well below GEMM rates), plus what recomputation
               redoes (selective: the score matmuls' forward 4*a*d*s; full: the whole layer)
    memory   = element-wise traffic at HBM bandwidth: norms, residual adds, RoPE, SwiGLU
               gating, ~3x forward for forward + backward; the loss' softmax; weights cast
               to the compute dtype; float32 gradient accumulation across micro-batches
    tensor / pipeline / expert communication: on the critical path, not overlapped
A flush of m micro-batches over p stages takes (m + p - 1) micro-batch times: the 1F1B
bubble is (p-1)/(m+p-1). A step is grad_accum flushes, the AdamW update (memory-bound, 28
bytes per local parameter) and the data-parallel traffic that overlap does not hide: the
gradient reduction overlaps the backward of the flush's last micro-batch, the weight
all-gather after the update (zero1/2) is exposed, zero3's gathers overlap a whole flush.
"""
from __future__ import annotations

from dataclasses import dataclass

from mindxh.models.accounting import training_flops_per_token
from mindxh.planner.comm import CommLine
from mindxh.planner.params import (
    layer_parameters,
    parameter_counts,
    routed_slots_per_token,
    stage_layers,
)
from mindxh.planner.setup import Setup

__all__ = ["Estimate", "estimate"]


@dataclass(frozen=True)
class Estimate:
    compute_s: float  # per micro-batch on the slowest stage
    memory_s: float
    tensor_s: float
    pipeline_s: float
    micro_batch_s: float
    bubble: float
    optimizer_s: float
    data_exposed_s: float
    step_s: float
    tokens_per_s_per_device: float
    model_flops_per_token: float
    mfu: float
    peak_flops: float
    gemm_efficiency: float
    attention_efficiency: float
    expert_s: float = 0.0  # expert-parallel all-to-all per micro-batch, not overlapped

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _matmul_per_token(s: Setup, index: int) -> float:
    """Matmul weights a token passes through in layer `index` on one rank. An MoE layer's
    experts compute on every slot, empty or not: k * capacity_factor experts' worth (the
    padding is real time, though MFU counts only the k useful ones); the router runs whole on
    every tensor rank. Expert parallel moves tokens, so a rank's share stays the same."""
    cfg = s.model
    layer = layer_parameters(cfg, index)
    bias = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim * cfg.qkv_bias
    routed = 0.0
    if layer.experts:
        routed = layer.experts / cfg.moe.num_experts * routed_slots_per_token(cfg.moe)
    return (layer.split - bias + routed) / s.tp + layer.router


def _stage_flops_per_token(s: Setup, stage: int) -> tuple[float, float]:
    """(matmul, attention-score) FLOPs per token on one rank of a stage, recompute included."""
    cfg = s.model
    layers = stage_layers(cfg, s.pp, stage)
    matmul = sum(_matmul_per_token(s, i) for i in layers)
    scores = 4 * cfg.num_heads * cfg.head_dim * s.seq * len(layers) / s.tp  # QK^T, AV forward
    dense, attention = 6 * matmul, 3 * scores
    if s.recompute == "selective":
        attention += scores
    elif s.recompute == "full":
        dense, attention = dense + 2 * matmul, attention + scores
    if stage == s.pp - 1:
        dense += 6 * s.vocab * cfg.hidden_size / (s.tp if s.vocab_parallel else 1)
    return dense, attention


def _elementwise(s: Setup, index: int) -> float:
    """Elements per token one layer's element-wise ops touch on one rank (forward)."""
    cfg = s.model
    h, f, d = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    sp = s.tp if s.sequence_parallel else 1
    mlp, whole = 3 * f, 0.0
    if cfg.moe.is_moe_layer(index):
        slots = routed_slots_per_token(cfg.moe)
        mlp = 3 * cfg.moe.expert_width(f) * (cfg.moe.num_shared_experts + slots)
        whole = 2 * h * slots  # dispatch scatter and combine gather
    return 10 * h / sp + whole + (2 * (cfg.num_heads + cfg.num_kv_heads) * d + mlp) / s.tp


def _stage_bytes_per_micro_batch(s: Setup, stage_params: int, last: bool) -> float:
    cfg, c = s.model, s.compute_bytes
    elementwise = sum(_elementwise(s, i) for i in stage_layers(cfg, s.pp, s.pp - 1))
    traffic = 3 * elementwise * c * s.tokens_per_micro_batch
    if last:
        traffic += 3 * 4 * s.vocab / (s.tp if s.vocab_parallel else 1) * s.tokens_per_micro_batch
    if c != s.param_bytes:
        traffic += stage_params * (s.param_bytes + c)
    if s.micro_batches * s.accum > 1:
        grads = stage_params / (s.dp if s.zero in ("zero2", "zero3") else 1)
        traffic += grads * 2 * 4
    return traffic


def estimate(s: Setup, stage_params: int, comm: list[CommLine]) -> tuple[Estimate, list[CommLine]]:
    """The time model above; returns the estimate and `comm` with exposed seconds filled in."""
    prof = s.profile
    peak = prof.peak_flops(s.compute_dtype)
    tokens = s.tokens_per_micro_batch
    compute = tokens * max(
        dense / (peak * prof.gemm_efficiency) + attention / (peak * prof.attention_efficiency)
        for dense, attention in (_stage_flops_per_token(s, i) for i in range(s.pp)))
    memory = _stage_bytes_per_micro_batch(s, stage_params, last=True) / prof.hbm_bandwidth
    micro_total = s.micro_batches * s.accum
    by_dim = {line.dimension: line for line in comm}
    tensor = by_dim["tensor"].seconds / micro_total if "tensor" in by_dim else 0.0
    pipeline = by_dim["pipeline"].seconds / micro_total if "pipeline" in by_dim else 0.0
    expert = by_dim["expert"].seconds / micro_total if "expert" in by_dim else 0.0
    micro = compute + memory + tensor + pipeline + expert
    flush = (s.micro_batches + s.pp - 1) * micro
    opt_shard = s.dp if s.zero != "none" else 1
    optimizer = stage_params / opt_shard * 28 / prof.hbm_bandwidth
    exposed_comm = []
    data_exposed = 0.0
    for line in comm:
        if line.dimension == "data":
            data_exposed = _data_exposed(s, line, stage_params, micro, compute)
            line = line.exposed(data_exposed)
        elif line.dimension in ("tensor", "pipeline", "expert"):
            line = line.exposed(line.seconds)
        exposed_comm.append(line)
    step = s.accum * flush + optimizer + data_exposed
    tps = s.tokens_per_step / step / s.devices
    counts = parameter_counts(s.model, s.vocab)
    fpt = training_flops_per_token(_with_vocab(s), counts, s.seq)
    bubble = (s.pp - 1) / (s.micro_batches + s.pp - 1)
    return Estimate(compute, memory, tensor, pipeline, micro, bubble, optimizer, data_exposed,
                    step, tps, fpt, tps * fpt / peak, peak, prof.gemm_efficiency,
                    prof.attention_efficiency, expert), exposed_comm


def _data_exposed(s: Setup, line: CommLine, stage_params: int, micro: float,
                  compute: float) -> float:
    d = s.dp
    frac = (d - 1) / d
    gather = frac * stage_params * s.param_bytes / line.bandwidth  # updated weights, once
    if s.zero == "zero3":
        flush = (s.micro_batches + s.pp - 1) * micro
        return s.accum * max(0.0, line.seconds / s.accum - flush)
    reduce = line.seconds - (gather if s.zero != "none" else 0.0)
    windows = s.accum if s.zero == "zero2" else 1
    backward = 2 / 3 * compute  # backward of the last micro-batch: 2/3 of its matmuls
    late = max(0.0, reduce / windows - backward) * windows
    return late + (gather if s.zero != "none" else 0.0)


def _with_vocab(s: Setup):
    """`training_flops_per_token` reads cfg.vocab_size; a null one means the tokenizer's."""
    if s.model.vocab_size is not None:
        return s.model
    import copy

    cfg = copy.copy(s.model)
    cfg.vocab_size = s.vocab
    return cfg
