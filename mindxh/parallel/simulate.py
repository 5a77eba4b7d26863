"""Tensor parallel replayed in NumPy, trusting neither MindSpore nor the plan.

`simulate(weights, cfg, tokens, targets, tp, plan)` cuts each weight into `tp` shards as the
plan's style says, runs every shard's share of a NumPy reference decoder (embedding, RMSNorm,
RoPE, grouped-query causal attention, SwiGLU; float64; nothing from MindSpore), and joins the
shards only with the collectives the plan implies: all-reduce (sum) after a row-parallel
matmul, all-reduce for a vocab-parallel embedding and cross entropy, an all-gather where a
style says `concat`. Nothing is redistributed behind the plan's back: a layer that receives
its input split when its style needs it whole (or shapes that do not line up) raises
PlanMismatch; a missing collective gives different numbers. So a plan whose logits and
loss match the unsharded model's is right about its splits *and* its communication. With
tp=1 this is the plain reference forward.

Mixture-of-experts layers (models/llama/moe.py) are replayed too: routing on every shard
from the replicated router (so all shards agree on the dispatch), the experts' w1/w3 and w2
split like an MLP's gate/up and down but on [E, out, in] weights, the weighted combine, the
shared experts as an MLP. `train=True` replays the training forward (tokens past an
expert's capacity dropped), else the plain forward (no drops). Expert parallel (tokens split
over data ranks, experts over `parallel.expert` ranks, the all-to-all between them) is
replayed by simulate_experts.py on top of this.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from mindxh.models.llama import parallelize as llama_plan
from mindxh.models.llama.rope import inv_frequencies
from mindxh.parallel.parallelize import matches

_MASKED = -1e9  # model.py's additive causal mask


class PlanMismatch(ValueError):
    """The plan's splits and collectives do not compose into the model's computation."""


@dataclass(frozen=True)
class Style:
    """How one matmul y = x W^T is split: `split` the axis of W [out, in] cut over the shards
    ("out", "in" or "none": replicated), `combine` the collective after the local matmul
    ("none": the output stays as it is, "sum": all-reduce, "concat": all-gather)."""

    split: str
    combine: str


def styles(vocab_parallel: bool) -> dict[str, Style]:
    """The plan table's style names (mindxh/models/llama/parallelize.py), as splits."""
    return {"colwise": Style("out", "none"), "rowwise": Style("in", "sum"),
            "vocab_out": Style("out", "none") if vocab_parallel else Style("none", "none"),
            "replicated": Style("none", "none"), "router": Style("none", "none"),
            "expert_colwise": Style("out", "none"), "expert_rowwise": Style("in", "sum")}


@dataclass
class Act:
    """One activation on every shard: `parts[r]` is shard r's array; `split` means the last
    axis is cut over the shards, else each shard holds (or believes it holds) the whole."""

    parts: list
    split: bool


@dataclass
class Result:
    logits: np.ndarray  # [B, S, V], float64 (gathered for the comparison when split)
    loss: float
    collectives: Counter = field(default_factory=Counter)  # kind -> count, as the plan implies


def simulate(weights: dict, cfg, tokens, targets=None, tp: int = 1, plan=None,
             vocab_parallel: bool = False, train: bool = False) -> Result:
    """Forward (and mean next-token loss over targets != -100) of the decoder under `plan`
    (path -> style name or Style; default the family's TENSOR_PLAN and MOE_PLAN) on `tp`
    shards; `train`: an MoE layer drops what exceeds its experts' capacity."""
    plan = {**llama_plan.TENSOR_PLAN, **llama_plan.MOE_PLAN} if plan is None else plan
    try:
        sim = Replay(weights, cfg, tp, plan, vocab_parallel)
        sim.train = train
        return sim.run(np.asarray(tokens), targets)
    except PlanMismatch:
        raise
    except ValueError as exc:  # a split that does not divide, shapes that do not meet
        raise PlanMismatch(f"the plan's shards do not line up: {exc}") from None


class Replay:
    """One forward of the sharded model in NumPy: each layer's shards and the collectives
    joining them (simulate_experts.py extends it with the expert-parallel dispatch)."""

    def __init__(self, weights, cfg, tp, plan, vocab_parallel):
        self.w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
        self.cfg, self.tp, self.plan, self.vocab_parallel = cfg, tp, plan, vocab_parallel
        self.styles = styles(vocab_parallel)
        self.comm: Counter = Counter()
        self.train = False  # MoE capacity: set by simulate()

    def planned(self, path: str) -> list:
        return [s for pattern, s in self.plan.items() if matches(pattern, path)]

    def style(self, path: str) -> Style:
        name = (self.planned(path) or ["replicated"])[0]
        return name if isinstance(name, Style) else self.styles[name]

    def shards(self, w, axis):
        return np.split(w, self.tp, axis) if axis is not None else [w] * self.tp

    def run(self, tokens, targets) -> Result:
        cfg = self.cfg
        x = self.embed(tokens)
        s = tokens.shape[1]
        angles = np.outer(np.arange(s), inv_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling))
        angles = np.concatenate([angles, angles], -1)  # rotate-half RoPE, as model.rope_tables
        self.cos, self.sin = np.cos(angles), np.sin(angles)
        self.mask = np.triu(np.full((s, s), _MASKED), 1)
        for i in range(cfg.num_layers):
            p = f"layers.{i}"
            x = self.add(x, self.attention(self.norm(x, f"{p}.attn_norm"), f"{p}.attn"))
            mlp = self.moe if cfg.moe.is_moe_layer(i) else self.mlp
            x = self.add(x, mlp(self.norm(x, f"{p}.mlp_norm"), f"{p}.mlp"))
        x = self.norm(x, "norm")
        head = self.linear(x, "matmul_t", "embed.weight") if cfg.tie_embeddings else self.linear(x, "lm_head")
        logits = np.concatenate(head.parts, -1) if head.split else head.parts[0]
        loss = float("nan") if targets is None else self.loss(head, np.asarray(targets))
        return Result(logits, loss, self.comm)

    def embed(self, tokens) -> Act:
        table = self.w["embed.weight"]
        if not self.vocab_parallel:
            return Act([table[tokens]] * self.tp, False)
        rows = table.shape[0] // self.tp  # each shard looks up the ids in its vocab range
        local = [np.where(((tokens >= r * rows) & (tokens < (r + 1) * rows))[..., None],
                          part[np.clip(tokens - r * rows, 0, rows - 1)], 0.0)
                 for r, part in enumerate(self.shards(table, 0))]
        return self.all_reduce(local)

    def all_reduce(self, parts, op=np.add) -> Act:
        self.comm["all_reduce"] += self.tp > 1
        total = parts[0]
        for part in parts[1:]:
            total = op(total, part)
        return Act([total] * self.tp, False)

    def add(self, a: Act, b: Act) -> Act:
        if a.split or b.split:
            raise PlanMismatch("a residual add receives a split activation: the plan is missing "
                               "an all-reduce (row-parallel) or all-gather before it")
        return Act([x + y for x, y in zip(a.parts, b.parts)], False)

    def norm(self, a: Act, path: str) -> Act:
        if a.split:
            raise PlanMismatch(f"{path}: RMSNorm needs the whole hidden vector, got it split")
        return Act([_rms(x, self.w[f"{path}.weight"], self.cfg.norm_eps) for x in a.parts], False)

    def linear(self, a: Act, path: str, weight: str | None = None) -> Act:
        st = self.style(path)
        w = self.w[weight or f"{path}.weight"]
        b = self.w.get(f"{path}.bias")
        if st.split == "in":  # axes from the end: W is [out, in], or [E, out, in] for experts
            xs = a.parts if a.split else [np.split(x, self.tp, -1)[r] for r, x in enumerate(a.parts)]
            ys = [x @ np.swapaxes(wr, -1, -2) for x, wr in zip(xs, self.shards(w, -1))]
            out = self.combine(ys, st, path)
            if b is not None:  # added once, after the partial sums are joined
                out = Act([y + b for y in out.parts], out.split)
            return out
        if a.split:
            raise PlanMismatch(f"{path}: its input is split over the shards but its style "
                               f"({st.split}-split) needs it whole: the plan has no all-gather there")
        out = st.split == "out"
        bs = self.shards(b, 0 if out else None) if b is not None else [0.0] * self.tp
        ys = [x @ np.swapaxes(wr, -1, -2) + br
              for x, wr, br in zip(a.parts, self.shards(w, -2 if out else None), bs)]
        return self.combine(ys, st, path) if out else Act(ys, False)

    def combine(self, ys, st: Style, path: str) -> Act:
        if st.combine == "sum":
            return self.all_reduce(ys)
        if st.combine == "concat":
            self.comm["all_gather"] += self.tp > 1
            return Act([np.concatenate(ys, -1)] * self.tp, False)
        # no collective: an out-split output stays split; an in-split one is partial sums
        # the plan claims are whole (the missing all-reduce shows up in the numbers)
        return Act(ys, st.split == "out")

    def attention(self, a: Act, path: str) -> Act:
        q, k, v = (self.linear(a, f"{path}.{n}") for n in ("wq", "wk", "wv"))
        if not (q.split == k.split == v.split):
            raise PlanMismatch(f"{path}: q, k and v are not split alike")
        if q.split and "heads" not in self.planned(f"{path}.matmul_qk"):
            raise PlanMismatch(f"{path}: q/k/v arrive split by head but matmul_qk is not planned "
                               "'heads'")
        outs = [self.core(qr, kr, vr, path) for qr, kr, vr in zip(q.parts, k.parts, v.parts)]
        return self.linear(Act(outs, q.split), f"{path}.wo")

    def core(self, q, k, v, path):
        """Causal GQA on the heads one shard holds: query head h reads KV head h // group."""
        cfg = self.cfg
        b, s, _ = q.shape
        d, group = cfg.head_dim, cfg.num_heads // cfg.num_kv_heads
        q, k, v = (t.reshape(b, s, -1, d) for t in (q, k, v))
        if q.shape[2] != group * k.shape[2]:
            raise PlanMismatch(f"{path}: a shard holds {q.shape[2]} query heads but {k.shape[2]} "
                               f"KV heads (group {group}): q and k/v are not split by KV head alike")
        if cfg.qk_norm:
            q = _rms(q, self.w[f"{path}.q_norm.weight"], cfg.norm_eps)
            k = _rms(k, self.w[f"{path}.k_norm.weight"], cfg.norm_eps)
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
        q, k = self.rope(q), self.rope(k)
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + self.mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, -1)

    def rope(self, x):
        half = x.shape[-1] // 2
        return x * self.cos + np.concatenate([-x[..., half:], x[..., :half]], -1) * self.sin

    def mlp(self, a: Act, path: str, names=("gate", "up", "down")) -> Act:
        """SwiGLU; `names` are the gate/up/down projections' (MoE experts: w1, w3, w2)."""
        gate, up = self.linear(a, f"{path}.{names[0]}"), self.linear(a, f"{path}.{names[1]}")
        if gate.split != up.split:
            raise PlanMismatch(f"{path}: {names[0]} and {names[1]} are not split alike")
        hidden = [g / (1.0 + np.exp(-g)) * u for g, u in zip(gate.parts, up.parts)]
        return self.linear(Act(hidden, gate.split), f"{path}.{names[2]}")

    def moe(self, a: Act, path: str) -> Act:
        """Every shard routes all tokens itself from the replicated router, then the experts run
        as an MLP does on the slots [E, C, H] (see models/llama/moe.py for the rules)."""
        m = self.cfg.moe
        if a.split:
            raise PlanMismatch(f"{path}: routing needs the whole hidden vector, got it split")
        scores = self.linear(a, f"{path}.router")
        if scores.split:
            raise PlanMismatch(f"{path}.router: its output is split over the shards, but every "
                               "shard needs all experts' scores to route")
        shape = a.parts[0].shape
        x = a.parts[0].reshape(-1, shape[-1])
        t, k, e = x.shape[0], m.experts_per_token, m.num_experts
        _, idx, gates = route(scores.parts[0].reshape(t, e), self.w.get(f"{path}.expert_bias"), m)
        cap = m.capacity(t) if self.train else t
        expert = idx.T.reshape(-1)  # choice-major, as the model fills slots
        position = np.array([np.sum(expert[:r] == ex) for r, ex in enumerate(expert)])
        keep = position < cap
        slot = expert * cap + position
        slots = np.zeros((e * cap, x.shape[-1]))
        slots[slot[keep]] = np.tile(x, (k, 1))[keep]
        hidden = self.mlp(Act([slots.reshape(e, cap, -1)] * self.tp, False), f"{path}.experts",
                          ("w1", "w3", "w2"))
        if hidden.split:
            raise PlanMismatch(f"{path}.experts: the combine needs each expert's whole output")
        ys = []
        for out in hidden.parts:
            picked = np.zeros((k * t, x.shape[-1]))
            picked[keep] = out.reshape(e * cap, -1)[slot[keep]]
            ys.append((picked.reshape(k, t, -1) * gates.T[..., None]).sum(0).reshape(shape))
        routed = Act(ys, False)
        if f"{path}.shared.gate.weight" in self.w:
            routed = self.add(routed, self.mlp(a, f"{path}.shared"))
        return routed

    def loss(self, head: Act, targets) -> float:
        """Mean cross entropy over targets != -100; on vocab-split logits, Megatron's
        vocab-parallel form: all-reduce the max, the sum of exps and the target logit."""
        valid = targets != -100
        if not head.split:
            logits = head.parts[0]
            top = logits.max(-1, keepdims=True)
            lse = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
            picked = np.take_along_axis(logits, np.where(valid, targets, 0)[..., None], -1)[..., 0]
            return float(((lse - picked) * valid).sum() / valid.sum())
        top = self.all_reduce([p.max(-1) for p in head.parts], np.maximum).parts[0]
        sumexp = self.all_reduce([np.exp(p - top[..., None]).sum(-1) for p in head.parts]).parts[0]
        width = head.parts[0].shape[-1]
        picked = self.all_reduce([
            np.where(valid & (targets >= r * width) & (targets < (r + 1) * width),
                     np.take_along_axis(p, np.clip(targets - r * width, 0, width - 1)[..., None], -1)[..., 0],
                     0.0) for r, p in enumerate(head.parts)]).parts[0]
        return float(((np.log(sumexp) + top - picked) * valid).sum() / valid.sum())


def route(logits, bias, m):
    """Router logits [T, E] -> (scores [T, E], chosen experts [T, k], gate weights [T, k]), as
    MoE.route: the bias (None: none) only decides the choice, the gates are the scores."""
    if m.scoring == "sigmoid":
        probs = 1.0 / (1.0 + np.exp(-logits))
    else:
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
    choice = probs if bias is None else probs + bias
    idx = np.argsort(-choice, -1, kind="stable")[:, :m.experts_per_token]
    gates = np.take_along_axis(probs, idx, -1)
    if m.normalize_gates:
        gates = gates / gates.sum(-1, keepdims=True)
    return probs, idx, gates


def _rms(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


__all__ = ["Act", "PlanMismatch", "Replay", "Result", "Style", "route", "simulate",
           "styles"]
