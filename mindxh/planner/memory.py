"""Per-device memory of a training step: weights, gradients, optimizer states, activations,
communication buffers, for every pipeline stage (the plan reports the fullest).

Activations follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", whose per-layer bytes for a GPT layer in 16-bit are
    s*b*h*(34 + 5*a*s/h)                 no parallelism, no recomputation
    s*b*h*(10 + 24/t + 5*a*s/(h*t))      tensor parallel t
    s*b*h/t*(34 + 5*a*s/h)               tensor + sequence parallel
    s*b*h/t*34                           + selective recomputation (attention core)
    2*s*b*h                              full recomputation (layer input only)
Re-derived here for mindxh's Llama block (RMSNorm, GQA, SwiGLU, no dropout), in elements
per token per layer, times the compute dtype's bytes:
    norms: 4h (each norm's input and output) -> split by t only with sequence parallel
    attention: q + wo input 2*a*d, k + v 2*kv*d (+ a*d + kv*d pre-norm q/k with qk_norm) -> /t
    scores: a*s softmax probabilities -> /t; gone with selective recompute (flash attention
    keeps the same: it recomputes scores in the backward)
    MLP: gate, up, silu(gate), their product 4f -> /t
    MoE layer: shared experts 4*f_shared -> /t; each routed slot per token (k * capacity_factor,
    E without a capacity) holds 4*f_expert (/t) plus its dispatched input and output rows 2h
    (whole on every tensor rank); router scores, one-hot and gates (2 + k)*E. Expert
    parallel moves tokens, not their count: a rank receives as many slots as it sends
Full recompute keeps each layer's input (h, /t with sequence parallel) plus one layer's
activations while it is recomputed. Stage i of a 1F1B pipeline holds min(p - i, m) micro-
batches in flight: stage 0 holds p, which is why it is usually the fullest.
"""
from __future__ import annotations

from dataclasses import dataclass

from mindxh.planner.params import (
    layer_parameters,
    routed_slots_per_token,
    stage_expert_parameters,
    stage_layers,
    stage_parameters,
)
from mindxh.planner.setup import Setup

__all__ = ["StageMemory", "activation_elements", "comm_groups", "fullest_stage", "stage_memory"]

ADAM_STATES = 2  # AdamW: first and second moments, float32


def activation_elements(s: Setup, recompute: str | None = None, index: int = 0) -> float:
    """Elements one tensor rank stores per token in layer `index` for one micro-batch."""
    cfg, t = s.model, s.tp
    recompute = recompute or s.recompute
    sp = t if s.sequence_parallel else 1
    a, kv, d, h, f = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_size, \
        cfg.intermediate_size
    if recompute == "full":
        return h / sp
    moe, whole = cfg.moe, 0.0
    mlp = 4 * f
    if moe.is_moe_layer(index):
        fe, slots = moe.expert_width(f), routed_slots_per_token(moe)
        mlp = 4 * fe * (moe.num_shared_experts + slots)
        whole = 2 * h * slots + (2 + moe.experts_per_token) * moe.num_experts
    split = 2 * a * d + 2 * kv * d + mlp + ((a + kv) * d if cfg.qk_norm else 0)
    scores = a * s.seq if recompute == "none" else 0
    return 4 * h / sp + whole + (split + scores) / t


def comm_groups(s: Setup, stage: int) -> int:
    """Communication groups a rank belongs to, each reserving its buffers: the world group,
    tensor, data (and expert) groups, and one per pipeline neighbour."""
    if s.devices <= 1:
        return 0
    neighbours = (stage > 0) + (stage < s.pp - 1)
    return 1 + (s.tp > 1) + (s.dp > 1) + (s.ep > 1) + neighbours


@dataclass(frozen=True)
class StageMemory:
    stage: int
    parameters: int  # held by one rank of this stage, before ZeRO sharding
    weights: float
    gradients: float
    optimizer: float
    activations: float
    in_flight: int  # micro-batches whose activations are alive at once
    logits: float
    working: float  # one layer's weights cast to the compute dtype (two gathered under zero3)
    comm_buffers: float
    reserve: float

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.optimizer

    @property
    def pool(self) -> float:
        """What MindSpore's memory pool must hold (capped by compile.max_device_memory)."""
        return self.model_states + self.activations + self.logits + self.working

    @property
    def total(self) -> float:
        return self.pool + self.comm_buffers + self.reserve

    def as_dict(self) -> dict:
        keys = ("weights", "gradients", "optimizer", "activations", "logits", "working",
                "comm_buffers", "reserve")
        return {"stage": self.stage, "parameters": self.parameters, "in_flight": self.in_flight,
                **{f"{k}_bytes": getattr(self, k) for k in keys}, "pool_bytes": self.pool,
                "total_bytes": self.total}


def stage_memory(s: Setup, stage: int) -> StageMemory:
    cfg = s.model
    params = stage_parameters(cfg, s.vocab, s.tp, s.pp, s.vocab_parallel, stage, s.ep)
    # routed experts are replicated over dp / ep ranks only: ZeRO shards them over that many
    experts = stage_expert_parameters(cfg, s.tp, s.pp, stage, s.ep)
    shard = {"none": (1, 1, 1), "zero1": (1, 1, s.dp), "zero2": (1, s.dp, s.dp),
             "zero3": (s.dp, s.dp, s.dp)}[s.zero]
    pb = s.param_bytes

    def sharded(d: int) -> float:  # parameters one rank keeps when ZeRO shards over d ranks
        return (params - experts) / d + experts / max(1, d // s.ep)

    weights, gradients = sharded(shard[0]) * pb, sharded(shard[1]) * pb
    optimizer = sharded(shard[2]) * ADAM_STATES * 4
    in_flight = min(s.pp - stage, s.micro_batches) if s.pp > 1 else 1
    layers = stage_layers(cfg, s.pp, stage)
    c, tokens = s.compute_bytes, s.tokens_per_micro_batch
    activations = in_flight * sum(activation_elements(s, index=i) for i in layers) * tokens * c
    if s.recompute == "full" and layers:  # one layer re-materialised during its backward
        activations += max(activation_elements(s, "selective", i) for i in layers) * tokens * c
    logits = 0.0
    if stage == s.pp - 1:  # compute-dtype logits + float32 softmax for the loss
        logits = tokens * s.vocab / (s.tp if s.vocab_parallel else 1) * (c + 4)
    copies = 2 if s.zero == "zero3" else (1 if c != pb else 0)  # casts, or gathered layers
    working = copies * max((_matrices(layer_parameters(cfg, i), s) for i in layers), default=0) * c
    buffers = comm_groups(s, stage) * s.profile.comm_buffer_bytes
    return StageMemory(stage, params, weights, gradients, optimizer, activations, in_flight,
                       logits, working, buffers, s.profile.runtime_reserve_bytes)


def _matrices(layer, s: Setup) -> float:
    """One layer's matrices on one rank (what a compute-dtype cast or a zero3 gather holds)."""
    return layer.split / s.tp + layer.experts / (s.tp * s.ep)


def fullest_stage(s: Setup) -> tuple[StageMemory, list[StageMemory]]:
    """The stage needing the most memory, and every stage (for the report)."""
    stages = [stage_memory(s, i) for i in range(s.pp)]
    return max(stages, key=lambda m: m.total), stages
