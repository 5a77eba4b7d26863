"""DeepSeek-style mixture-of-experts MLP: shared experts plus top-k routed experts.

    x [T, H] -> scores s = softmax(x W_r^T) (or sigmoid, DeepSeek-V3)          [T, E]
             -> choose top-k of s (+ a per-expert bias under `balance: bias`)  [T, k]
                gate weights g = s at the chosen experts (never the bias), renormalised
             -> dispatch each (token, choice) into its expert's slot           [E, C, H]
             -> E SwiGLU experts, one batched matmul per projection            [E, C, H]
             -> y_t = sum_j g_tj * out[slot_tj]  + shared experts' SwiGLU(x_t)

Static shapes, for graph mode and Ascend: each expert has C fixed slots. The training forward
(`with_aux`, reached through LossCell) uses C = ceil(capacity_factor * T * k / E); a choice
past its expert's C-th slot is dropped: it contributes zero (the residual and the shared
experts still apply) and is counted. Slots fill choice-major (every token's first choice
before any second choice, GShard), in token order within a choice. The plain forward
(generation, GRPO log-probs, export) routes every token (C = T, the no-drop limit), as
inference engines do.

Dispatch is a scatter of the k*T (token, choice) rows into the E*C slots (dropped rows land in
one spare row that is cut off) and combine is a gather back: both move O(T*k*H) numbers. A
dense one-hot dispatch matmul would cost O(T*E*C*H) = O(capacity_factor*k*T^2*H) FLOPs,
quadratic in the tokens. The experts run on all E*C slots, i.e. capacity_factor times the
routed work (empty slots hold zeros); the no-drop forward runs E/k times it, which is
acceptable for generation at small sizes and the price of static shapes. Measured on the
2-core CPU (graph mode, 1024 tokens, hidden 64, 4 experts of 64, top-2, 1 shared): forward +
backward of the MoE layer takes ~2.3x a dense SwiGLU of width 192 (~140 vs ~60 ms); the
routing, scatter and gather are most of the difference at this size.

Balance (MoEConfig.balance): `aux_loss` returns coef * E * sum_i f_i * P_i (f_i: share of the
k*T choices that went to expert i, P_i: mean router probability of i; 1.0 * coef when
uniform) for LossCell to add (so the logged loss and eval_loss include it; metrics.jsonl
has it alone as moe_aux_loss). `bias`: DeepSeek-V3's auxiliary-loss-free rule; the bias is a
non-trainable Parameter (so it is checkpointed and a resume is bitwise), changed only by
`ExpertBalance` (mindxh/train/moe_balance.py), which the trainer runs after each applied step.
The training forward also records its routing statistics (choices per expert, drops, the
balance statistic) in non-trainable Parameters: `moe_metrics` (there too) reads them for
metrics.jsonl and `ExpertBalance` reads the counts. GRPO runs the plain forward: no balance
loss, no bias update, no statistics (the router is left as pretraining shaped it, as many RL setups do).
"""
from __future__ import annotations

import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore import dtype as mstype

from mindxh.config.schema import ModelConfig, expert_capacity
from mindxh.models.llama.model import MLP, Linear, _normal

__all__ = ["ExpertLinear", "Experts", "MoE", "moe_layers"]


def _zeros(*shape: int) -> Tensor:
    return Tensor(np.zeros(shape, np.float32))


class ExpertLinear(nn.Cell):
    """E independent projections at once: x [E, C, in] -> [E, C, out], W [E, out, in]. Its one
    BatchMatMul is the primitive that carries the expert-parallel strategy."""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.weight = Parameter(weight, name="weight")
        self.matmul = ops.BatchMatMul(transpose_b=True)

    def construct(self, x):
        return self.matmul(x, self.weight)


class Experts(nn.Cell):
    """E SwiGLU experts, w2(silu(w1 x) * w3 x) (Mixtral / DeepSeek naming)."""

    def __init__(self, cfg: ModelConfig, rng: np.random.Generator):
        super().__init__()
        e, h = cfg.moe.num_experts, cfg.hidden_size
        f = cfg.moe.expert_width(cfg.intermediate_size)
        self.w1 = ExpertLinear(_normal(rng, (e, f, h), cfg.init_std))
        self.w3 = ExpertLinear(_normal(rng, (e, f, h), cfg.init_std))
        self.w2 = ExpertLinear(_normal(rng, (e, h, f), cfg.init_std / math.sqrt(2 * cfg.num_layers)))

    def construct(self, x):
        return self.w2(ops.silu(self.w1(x)) * self.w3(x))


class MoE(nn.Cell):
    """Drop-in for the dense MLP: [..., H] -> [..., H]; see the module docstring."""

    def __init__(self, cfg: ModelConfig, rng: np.random.Generator):
        super().__init__()
        m = cfg.moe
        self.num_experts, self.top_k = m.num_experts, m.experts_per_token
        self.capacity_factor = m.capacity_factor
        self.sigmoid = m.scoring == "sigmoid"
        # one expert per token: its normalised gate is exactly 1, and the router would get no
        # gradient from the loss; the raw score is the gate then (Switch Transformer)
        self.normalize = m.normalize_gates and m.experts_per_token > 1
        self.aux_coef = m.aux_loss_coef if m.balance == "aux_loss" else 0.0
        self.router = Linear(_normal(rng, (m.num_experts, cfg.hidden_size), cfg.init_std))
        self.experts = Experts(cfg, rng)
        width = m.num_shared_experts * m.expert_width(cfg.intermediate_size)
        self.shared = MLP(cfg, rng, width) if m.num_shared_experts else None
        self.expert_bias = (Parameter(_zeros(m.num_experts), name="expert_bias", requires_grad=False)
                            if m.balance == "bias" else None)
        # the last training forward's statistics: choices per expert (before capacity), choices
        # dropped, the balance statistic E * sum_i f_i * P_i (1.0 when uniform)
        self.routed = Parameter(_zeros(m.num_experts), name="routed", requires_grad=False)
        self.dropped = Parameter(_zeros(1), name="dropped", requires_grad=False)
        self.balance = Parameter(_zeros(1), name="balance", requires_grad=False)
        self.on, self.off = Tensor(1.0, mstype.float32), Tensor(0.0, mstype.float32)

    def construct(self, x):
        """The plain forward: every token reaches its k experts."""
        y, _, _, _ = self._forward(x, False)
        return y

    def with_aux(self, x):
        """The training forward: capacity applies, the statistics are recorded; returns
        (y, the balance loss to add: zero unless `balance: aux_loss`)."""
        y, balance, routed, dropped = self._forward(x, True)
        y = ops.depend(y, ops.assign(self.routed, routed))
        y = ops.depend(y, ops.assign(self.dropped, dropped.reshape(1)))
        y = ops.depend(y, ops.assign(self.balance, balance.reshape(1)))
        if self.aux_coef > 0:
            return y, balance * self.aux_coef
        return y, ops.zeros_like(balance)

    def route(self, x):
        """x [T, H] -> (scores [T, E], chosen experts [T, k], their gate weights [T, k]). The
        bias only decides the choice; the gates are the unbiased scores."""
        logits = self.router(x)
        scores = ops.sigmoid(logits) if self.sigmoid else ops.softmax(logits, -1)
        choice = scores if self.expert_bias is None else scores + self.expert_bias
        _, idx = ops.topk(ops.stop_gradient(choice), self.top_k)  # selection: not differentiated
        gates = ops.gather_elements(scores, 1, idx)
        if self.normalize:
            gates = gates / gates.sum(-1, keepdims=True)
        return scores, idx, gates

    def _forward(self, x, drop: bool):
        """-> (y, balance statistic, choices per expert [E], choices dropped)."""
        shape = x.shape
        h = shape[-1]
        x = x.reshape(-1, h)
        t = x.shape[0]
        e, k = self.num_experts, self.top_k
        cap = expert_capacity(t, k, e, self.capacity_factor if drop else None)
        scores, idx, gates = self.route(x)
        expert = idx.transpose(1, 0).reshape(-1)  # choice-major: [k*T]
        onehot = ops.one_hot(expert, e, self.on, self.off)  # [k*T, E]
        position = ((ops.cumsum(onehot, 0) - onehot) * onehot).sum(-1)  # place in its expert's queue
        keep = position < cap
        slot = ops.select(keep, expert * cap + position.astype(mstype.int32),
                          ops.full_like(expert, e * cap))  # dropped -> the spare row
        rows = ops.broadcast_to(x.expand_dims(0), (k, t, h)).reshape(k * t, h)
        slots = ops.scatter_nd(slot.expand_dims(-1), rows, (e * cap + 1, h))
        out = self.experts(slots[:e * cap].reshape(e, cap, h)).reshape(e * cap, h)
        out = ops.concat((out, ops.zeros((1, h), out.dtype)), 0)  # a dropped choice reads zeros
        picked = ops.gather(out, slot, 0).reshape(k, t, h)
        y = (picked * gates.transpose(1, 0).expand_dims(-1)).sum(0)
        if self.shared is not None:
            y = y + self.shared(x)
        routed = onehot.sum(0)
        probs = scores if not self.sigmoid else scores / scores.sum(-1, keepdims=True)
        balance = e * (routed / (t * k) * probs.mean(0)).sum()
        dropped = (1.0 - keep.astype(mstype.float32)).sum()
        return y.reshape(shape), balance, routed, dropped


def moe_layers(model) -> list[MoE]:
    """The MoE cells of a Decoder, in layer order (dense layers skipped)."""
    return [layer.mlp for layer in model.layers if layer.moe]
