"""Exact parameter counts of mindxh's decoder from its `ModelConfig` alone (no MindSpore), and
how they split over tensor, pipeline and expert parallel ranks; for mixture-of-experts
models, total and active (per token) counts.

Mirrors mindxh/models/llama/model.py tensor by tensor, so the planner can size a 70B model
without building it; tests/test_planner_params.py checks the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass

from mindxh.errors import MindxhError

__all__ = ["LayerParams", "layer_parameters", "parameter_counts", "routed_slots_per_token",
           "stage_expert_parameters", "stage_layers", "stage_parameters", "vocab_of"]


def vocab_of(cfg, tokenizer_vocab: int | None = None) -> int:
    """`model.vocab_size`, or the tokenizer's when the recipe leaves it null."""
    vocab = cfg.vocab_size if cfg.vocab_size is not None else tokenizer_vocab
    if vocab is None:
        raise MindxhError("model.vocab_size is null and no tokenizer vocabulary is known")
    return int(vocab)


@dataclass(frozen=True)
class LayerParams:
    """One decoder block: `split` is what tensor parallelism divides (projection matrices, the
    q/k/v biases, which follow their column-parallel outputs, and an MoE layer's shared
    experts); `replicated` is what every tensor rank keeps whole (RMSNorm gains, the per-head
    q/k norms, an MoE router); `experts` are an MoE layer's routed experts, divided over
    expert x tensor ranks, of which one token runs `active_experts`."""

    attention: int
    mlp: int  # the dense SwiGLU, or an MoE layer's shared experts
    norms: int
    router: int = 0
    experts: int = 0
    active_experts: int = 0

    @property
    def split(self) -> int:
        return self.attention + self.mlp

    @property
    def replicated(self) -> int:
        return self.norms + self.router

    @property
    def total(self) -> int:
        return self.split + self.replicated + self.experts

    @property
    def active(self) -> int:
        return self.split + self.replicated + self.active_experts

    def per_rank(self, tensor: int = 1, expert: int = 1) -> int:
        return self.split // tensor + self.replicated + self.experts // (expert * tensor)


def layer_parameters(cfg, index: int = 0) -> LayerParams:
    """Block `index` (it matters only for MoE models, whose first layers may be dense)."""
    h, d, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    q, kv = cfg.num_heads * d, cfg.num_kv_heads * d
    attention = h * q + 2 * h * kv + q * h  # wq, wk, wv, wo ([out, in] each)
    if cfg.qkv_bias:
        attention += q + 2 * kv
    norms = 2 * h + (2 * d if cfg.qk_norm else 0)  # attn_norm, mlp_norm (+ q_norm, k_norm)
    moe = cfg.moe
    if not moe.is_moe_layer(index):
        return LayerParams(attention=attention, mlp=3 * h * f, norms=norms)
    expert = 3 * h * moe.expert_width(f)  # w1, w3, w2
    return LayerParams(attention=attention, mlp=moe.num_shared_experts * expert, norms=norms,
                       router=moe.num_experts * h, experts=moe.num_experts * expert,
                       active_experts=moe.experts_per_token * expert)


def routed_slots_per_token(moe) -> float:
    """Expert slots a token's routing occupies: k * capacity_factor (at most E), E without one."""
    if moe.capacity_factor is None:
        return float(moe.num_experts)
    return min(float(moe.num_experts), moe.experts_per_token * moe.capacity_factor)


def stage_layers(cfg, pipeline: int, stage: int) -> range:
    """The block indices pipeline `stage` holds (layers split evenly, in order)."""
    per = cfg.num_layers // pipeline
    return range(stage * per, (stage + 1) * per)


def parameter_counts(cfg, tokenizer_vocab: int | None = None) -> dict[str, int]:
    """Same keys and meaning as `mindxh.models.accounting.count_parameters(model)`: `total`,
    `embedding` (the input table), `non_embedding` (everything else, incl. an untied head), and
    `active` / `active_non_embedding` (a token's share: top-k of the routed experts)."""
    vocab = vocab_of(cfg, tokenizer_vocab)
    embedding = vocab * cfg.hidden_size
    head = 0 if cfg.tie_embeddings else vocab * cfg.hidden_size
    layers = [layer_parameters(cfg, i) for i in range(cfg.num_layers)]
    rest = embedding + cfg.hidden_size + head
    total = rest + sum(layer.total for layer in layers)
    active = rest + sum(layer.active for layer in layers)
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding,
            "active": active, "active_non_embedding": active - embedding}


def stage_parameters(cfg, vocab: int, tensor: int, pipeline: int, vocab_parallel: bool,
                     stage: int, expert: int = 1) -> int:
    """Parameters one rank of pipeline `stage` holds. Layers split evenly over stages; the
    embedding lives on the first stage and the head (plus final norm) on the last; a tied head
    on a different stage than the embedding keeps its own copy (as Megatron does). Vocabulary
    matrices split over `tensor` only with vocab_parallel; routed experts over expert x tensor."""
    count = sum(layer_parameters(cfg, i).per_rank(tensor, expert)
                for i in stage_layers(cfg, pipeline, stage))
    table = vocab * cfg.hidden_size // (tensor if vocab_parallel else 1)
    first, last = stage == 0, stage == pipeline - 1
    if first:
        count += table
    if last:
        count += cfg.hidden_size
        if not cfg.tie_embeddings or not first:
            count += table
    return count


def stage_expert_parameters(cfg, tensor: int, pipeline: int, stage: int, expert: int) -> int:
    """The routed-expert part of `stage_parameters`: replicated only over data_parallel /
    expert ranks, so ZeRO shards it over that many, not over all data-parallel ranks."""
    return sum(layer_parameters(cfg, i).experts // (expert * tensor)
               for i in stage_layers(cfg, pipeline, stage))
