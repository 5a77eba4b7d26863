"""Expert parallel replayed in NumPy, trusting neither MindSpore nor the plan.

simulate.py replays tensor parallel; this module adds what expert parallel (EP) does to a
mixture-of-experts layer (models/llama/moe.py), on a grid of dp data ranks x tp tensor
ranks (global rank d * tp + t, MindSpore's numbering):

1. tokens: data rank d holds batch rows [d*B/dp, (d+1)*B/dp), as dataset_strategy splits them;
2. routing: each rank scores only its own tokens with the replicated router;
3. capacity: global, as the model computes it. Under semi-auto parallel MindSpore compiles the
   single-device graph on global shapes, so `expert_capacity` sees the global token count T
   and the slot order (choice-major, then token order) runs over the whole batch. A rank
   finds its choices' global slot numbers from the per-(choice, expert) counts of every rank,
   an all-gather of k x E integers. So the same choices drop as on one device; a per-rank
   capacity (GShard's groups) would drop different ones, and the model has none;
4. dispatch: the expert matmuls' strategies (mindxh/parallel/parallelize.py `strategy`, read,
   not re-derived) say which rank holds which block of the slots [E, C, H] and of the weights
   [E, out, in]; each rank fills one send buffer per destination, and an all-to-all within
   each tensor index t exchanges them;
5. experts: each rank runs its block (w1/w3, SwiGLU, w2) with its weight block; partial sums
   of a split contraction are all-reduced;
6. combine: the outputs go back by the reverse all-to-all, and each source rank sums them
   with its gates (a dropped choice contributes nothing). The shared experts run as
   simulate.py's tensor-parallel MLP.

Nothing is redistributed behind the plan's back: blocks that do not line up (experts cut
differently on x and W, a hidden block w2 does not expect, a capacity the slot split does
not divide, rows returned to a rank that did not send them) raise PlanMismatch; a
misrouted exchange that happens to fit gives wrong numbers. Dense layers run on the whole
batch as in simulate.py: batch rows do not interact there, so only the MoE layer needs the
data-parallel split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mindxh.config.scale import ParallelConfig
from mindxh.models.llama import parallelize as llama_plan
from mindxh.parallel.parallelize import plan_problems, strategy
from mindxh.parallel.simulate import Act, PlanMismatch, Replay, Result, route


@dataclass
class LayerStats:
    """What the training forward records (MoE.routed / dropped / balance), summed over ranks."""

    routed: np.ndarray  # [E] choices per expert, before capacity
    dropped: int  # choices past their expert's capacity
    balance: float  # E * sum_i f_i * P_i over the global batch (1.0 when uniform)


@dataclass
class ExpertResult(Result):
    """simulate.Result plus what the MoE layers recorded."""

    layers: list = field(default_factory=list)  # LayerStats per MoE layer
    aux: float = 0.0  # the balance loss included in `loss` (train with balance: aux_loss)


@dataclass
class Parcel:
    """Rows one rank sends to another for its experts, with the slots they go to."""

    rows: np.ndarray  # [n, H]
    experts: np.ndarray  # [n]
    positions: np.ndarray  # [n] slot in the expert's capacity


@dataclass
class _Group:
    """One all-to-all group (the data ranks at one tensor index) after the dispatch."""

    routing: list  # per data rank: (scores [T_d, E], experts [T_d, k], gates [T_d, k])
    positions: list  # per data rank: global slot numbers [T_d, k] (>= capacity: dropped)
    inbox: list  # inbox[d][s]: the Parcel rank d got from rank s
    sent: dict  # (s, d) -> (tokens, choices) rank s sent to d, in order


def all_to_all(send: list) -> list:
    """send[s][d] from rank s to rank d -> recv[d][s]."""
    return [[send[s][d] for s in range(len(send))] for d in range(len(send))]


def _cut(size: int, parts: int, i: int, what: str) -> slice:
    if size % parts:
        raise PlanMismatch(f"{what}: {size} does not split into {parts}")
    step = size // parts
    return slice(i * step, (i + 1) * step)


@dataclass(frozen=True)
class Split:
    """One expert BatchMatMul x [E, C, K] @ W [E, N, K]^T under its in_strategy ((e, c, k),
    (e, n, k)): device matrix (e, c, n, k), numbered row-major (MindSpore's order)."""

    path: str
    dims: tuple

    @classmethod
    def of(cls, path: str, in_strategy, world: int) -> Split:
        (e, c, k), (e2, n, k2) = in_strategy
        if e != e2:
            raise PlanMismatch(f"{path}: x's experts axis is cut into {e}, the weight's into {e2}")
        if k != k2:
            raise PlanMismatch(f"{path}: the contracted axis is cut into {k} on x, {k2} on W")
        if e * c * n * k != world:
            raise PlanMismatch(f"{path}: the strategy covers {e * c * n * k} of {world} devices")
        return cls(path, (e, c, n, k))

    def coords(self, g: int) -> tuple:
        return tuple(int(i) for i in np.unravel_index(g, self.dims))

    def x_block(self, g: int, shape) -> tuple:
        (ie, ic, _, ik), (e, c, _, k) = self.coords(g), self.dims
        return (_cut(shape[0], e, ie, f"{self.path} experts"),
                _cut(shape[1], c, ic, f"{self.path} capacity slots"),
                _cut(shape[2], k, ik, f"{self.path} input width"))

    def w_block(self, g: int, shape) -> tuple:
        (ie, _, i_n, ik), (e, _, n, k) = self.coords(g), self.dims
        return (_cut(shape[0], e, ie, f"{self.path} experts"),
                _cut(shape[1], n, i_n, f"{self.path} output width"),
                _cut(shape[2], k, ik, f"{self.path} input width"))

    def out_block(self, g: int, shape) -> tuple:
        (ie, ic, i_n, _), (e, c, n, _) = self.coords(g), self.dims
        return (_cut(shape[0], e, ie, f"{self.path} experts"),
                _cut(shape[1], c, ic, f"{self.path} capacity slots"),
                _cut(shape[2], n, i_n, f"{self.path} output width"))

    def reduce_group(self, g: int) -> list[int]:
        """The ranks holding the other partial sums of g's output (the contraction's cuts)."""
        ie, ic, i_n, _ = self.coords(g)
        return [int(np.ravel_multi_index((ie, ic, i_n, i), self.dims)) for i in range(self.dims[3])]


def simulate_experts(weights: dict, cfg, tokens, targets=None, parallel=None, plan=None,
                     train: bool = False) -> ExpertResult:
    """Logits and loss (cross entropy, plus the balance loss when training with
    `balance: aux_loss`, as LossCell) of the decoder under `parallel` (a ParallelConfig:
    data_parallel, expert, tensor, vocab_parallel); `plan`: path -> style name, Style or
    in_strategy (default the family's TENSOR_PLAN and MOE_PLAN)."""
    sim = _replay(lambda: _ExpertSim(weights, cfg, parallel or ParallelConfig(), plan, train))
    res = _replay(lambda: sim.run(np.asarray(tokens), targets))
    aux = sum(s.balance for s in sim.stats) * cfg.moe.aux_loss_coef if (
        train and cfg.moe.balance == "aux_loss") else 0.0
    return ExpertResult(res.logits, res.loss + aux, res.collectives, sim.stats, aux)


def moe_layer(weights: dict, cfg, x, path: str, parallel, plan=None, train: bool = False):
    """One MoE layer (`path`, e.g. layers.1.mlp) on hidden states x [B, S, H] ->
    (y [B, S, H], its LayerStats, the collectives it used)."""
    sim = _replay(lambda: _ExpertSim(weights, cfg, parallel, plan, train))
    out = _replay(lambda: sim.moe(Act([np.asarray(x, np.float64)] * sim.tp, False), path))
    return out.parts[0], sim.stats[0], sim.comm


def _replay(step):
    """Run `step`; shapes that do not meet (NumPy's ValueError) are the plan's fault."""
    try:
        return step()
    except PlanMismatch:
        raise
    except ValueError as exc:
        raise PlanMismatch(f"the plan's shards do not line up: {exc}") from None


class _ExpertSim(Replay):
    def __init__(self, weights, cfg, parallel, plan, train):
        problems = plan_problems(cfg, parallel)
        if problems:
            raise PlanMismatch("; ".join(problems))
        plan = {**llama_plan.TENSOR_PLAN, **llama_plan.MOE_PLAN} if plan is None else plan
        super().__init__(weights, cfg, parallel.tensor, plan, parallel.vocab_parallel)
        self.parallel, self.dp, self.train = parallel, parallel.data_parallel, train
        self.stats: list[LayerStats] = []

    def split(self, path: str) -> Split:
        found = self.planned(path)
        if not found:
            raise PlanMismatch(f"{path}: the plan gives it no strategy")
        s = found[0] if isinstance(found[0], tuple) else strategy(found[0], self.parallel)[0]
        return Split.of(path, s, self.dp * self.tp)

    def moe(self, a: Act, path: str) -> Act:
        """Route on every rank, dispatch, run the expert blocks, return, combine; see the
        module doc. a.parts[t] is the whole batch as tensor rank t holds it."""
        m, (b, s, h) = self.cfg.moe, a.parts[0].shape
        if a.split or self.style(f"{path}.router").split != "none":
            raise PlanMismatch(f"{path}: routing needs whole hidden vectors and all scores")
        if b % self.dp:
            raise PlanMismatch(f"{path}: batch {b} does not split over {self.dp} data ranks")
        cap = m.capacity(b * s) if self.train else b * s  # global T: see the module doc
        w1, shape = self.split(f"{path}.experts.w1"), (m.num_experts, cap, h)
        groups = [self.dispatch(x.reshape(b * s, h), path, w1, t, shape)
                  for t, x in enumerate(a.parts)]
        blocks = {d * self.tp + t: self.receive(w1, d * self.tp + t, g.inbox[d], shape)
                  for t, g in enumerate(groups) for d in range(self.dp)}
        outs = self.experts(f"{path}.experts", w1, blocks, shape)
        ys = [self.collect(g, outs, w1, t, shape).reshape(b, s, h) for t, g in enumerate(groups)]
        self.comm["all_gather"] += self.dp > 1  # the per-(choice, expert) counts
        self.comm["all_to_all"] += 2 * (self.dp > 1)  # to the experts and back
        self.record(groups[0], cap)
        routed = Act(ys, False)
        if f"{path}.shared.gate.weight" in self.w:
            routed = self.add(routed, self.mlp(a, f"{path}.shared"))
        return routed

    def dispatch(self, x, path: str, w1: Split, t: int, shape) -> _Group:
        """The all-to-all of the data ranks at tensor index t: each routes its own rows of x
        [T, H] and sends every kept choice to the rank holding its slot."""
        rows = np.split(x, self.dp)  # data rank d's tokens
        router, bias = self.w[f"{path}.router.weight"], self.w.get(f"{path}.expert_bias")
        routing = [route(r @ router.T, bias, self.cfg.moe) for r in rows]
        positions = self.positions([idx for _, idx, _ in routing])
        owner = self.owners(w1, t, shape)
        send = [[None] * self.dp for _ in range(self.dp)]
        sent = {}
        for src, (r, (_, idx, _), pos) in enumerate(zip(rows, routing, positions)):
            for dst, (tok, j) in self.destinations(idx, pos, owner, shape[1]).items():
                send[src][dst] = Parcel(r[tok], idx[tok, j], pos[tok, j])
                sent[src, dst] = (tok, j)
        return _Group(routing, positions, all_to_all(send), sent)

    def positions(self, chosen: list) -> list:
        """Each rank's choices [T_d, k] -> their global slot numbers in their experts' queues:
        every first choice (ranks in order, tokens in order) before any second choice."""
        e = self.cfg.moe.num_experts
        counts = np.stack([[np.bincount(c[:, j], minlength=e) for j in range(c.shape[1])]
                           for c in chosen])  # all-gathered: [dp, k, E]
        per_choice = counts.sum(0)
        before = (np.cumsum(per_choice, 0) - per_choice)[None] + np.cumsum(counts, 0) - counts
        out = []
        for d, c in enumerate(chosen):
            onehot = c[..., None] == np.arange(e)  # [T_d, k, E]
            local = ((np.cumsum(onehot, 0) - onehot) * onehot).sum(-1)  # earlier own tokens
            out.append(local + before[d][np.arange(c.shape[1]), c])
        return out

    def owners(self, w1: Split, t: int, shape) -> np.ndarray:
        """[E, C] -> the data rank whose tensor rank t holds that slot (w1's x block)."""
        owner = np.full(shape[:2], -1)
        for d in range(self.dp):
            se, sc, _ = w1.x_block(d * self.tp + t, shape)
            if (owner[se, sc] >= 0).any():
                raise PlanMismatch(f"{w1.path}: several data ranks hold the same slots")
            owner[se, sc] = d
        if (owner < 0).any():
            raise PlanMismatch(f"{w1.path}: some slots are on no rank of tensor index {t}")
        return owner

    def destinations(self, idx, pos, owner, cap) -> dict:
        """dst -> (tokens, choices) a rank sends there, in order; past-capacity choices stay."""
        tok, j = np.nonzero(pos < cap)
        dst = owner[idx[tok, j], pos[tok, j]]
        return {d: (tok[dst == d], j[dst == d]) for d in range(self.dp)}

    def receive(self, w1: Split, g: int, parcels: list, shape) -> np.ndarray:
        """Rank g's block of the slots [E, C, H], filled from what every rank sent it."""
        se, sc, sk = w1.x_block(g, shape)
        block = np.zeros((se.stop - se.start, sc.stop - sc.start, shape[2]))
        filled = np.zeros(block.shape[:2], bool)
        for p in parcels:
            e, c = p.experts - se.start, p.positions - sc.start
            if ((e < 0) | (e >= block.shape[0]) | (c < 0) | (c >= block.shape[1])).any() \
                    or filled[e, c].any():
                raise PlanMismatch(f"rank {g} got rows for slots it does not hold, or twice")
            block[e, c], filled[e, c] = p.rows, True
        return block[..., sk]

    def experts(self, path: str, w1: Split, blocks: dict, shape) -> dict:
        """Each rank's SwiGLU on its block; w2's partial sums all-reduced over its cuts."""
        w3, w2 = self.split(f"{path}.w3"), self.split(f"{path}.w2")
        if w3.dims != w1.dims:
            raise PlanMismatch(f"{path}: w1 and w3 are not split alike")
        W1, W3, W2 = (self.w[f"{path}.{n}.weight"] for n in ("w1", "w3", "w2"))
        f = W1.shape[1]
        gate = self.reduce(w1, {g: x @ np.swapaxes(W1[w1.w_block(g, W1.shape)], -1, -2)
                                for g, x in blocks.items()})
        up = self.reduce(w1, {g: x @ np.swapaxes(W3[w1.w_block(g, W3.shape)], -1, -2)
                              for g, x in blocks.items()})
        partial = {}
        for g in blocks:
            if w1.out_block(g, shape[:2] + (f,)) != w2.x_block(g, shape[:2] + (f,)):
                raise PlanMismatch(f"{path}.w2: rank {g}'s hidden block is not the one w2 "
                                   "expects there: the plan has no redistribution")
            if w2.out_block(g, shape)[:2] != w1.x_block(g, shape)[:2] or w2.dims[2] > 1:
                raise PlanMismatch(f"{path}.w2: the combine needs each slot's whole output "
                                   f"on the rank its token arrived at")
            hidden = gate[g] / (1 + np.exp(-gate[g])) * up[g]
            partial[g] = hidden @ np.swapaxes(W2[w2.w_block(g, W2.shape)], -1, -2)
        return self.reduce(w2, partial)

    def reduce(self, split: Split, partial: dict) -> dict:
        """All-reduce over the ranks that each hold part of a contraction (none if uncut)."""
        self.comm["all_reduce"] += split.dims[3] > 1
        return {g: sum(partial[r] for r in split.reduce_group(g)) for g in partial}

    def collect(self, group: _Group, outs: dict, w1: Split, t: int, shape) -> np.ndarray:
        """The outputs back to their sources (reverse all-to-all), weighted by the gates."""
        back = [[None] * self.dp for _ in range(self.dp)]
        for d, parcels in enumerate(group.inbox):
            g = d * self.tp + t
            se, sc, _ = w1.x_block(g, shape)
            for src, p in enumerate(parcels):
                back[d][src] = outs[g][p.experts - se.start, p.positions - sc.start]
        ys = []
        for src, ((_, _, gates), rows) in enumerate(zip(group.routing, all_to_all(back))):
            y = np.zeros((gates.shape[0], shape[2]))
            for d, out in enumerate(rows):
                tok, j = group.sent[src, d]
                if out.shape[0] != tok.shape[0]:
                    raise PlanMismatch(f"rank {src} sent {tok.shape[0]} rows to rank {d} and got "
                                       f"{out.shape[0]} back")
                np.add.at(y, tok, gates[tok, j][:, None] * out)
            ys.append(y)
        return np.concatenate(ys)

    def record(self, group: _Group, cap: int) -> None:
        """The layer's statistics, as the model's training forward records them."""
        e = self.cfg.moe.num_experts
        routed = sum(np.bincount(idx.ravel(), minlength=e) for _, idx, _ in group.routing)
        dropped = int(sum((p >= cap).sum() for p in group.positions))
        probs = np.concatenate([p for p, _, _ in group.routing])  # the graph all-reduces the mean
        if self.cfg.moe.scoring == "sigmoid":
            probs = probs / probs.sum(-1, keepdims=True)
        share = routed / routed.sum()
        self.stats.append(LayerStats(routed, dropped, float(e * (share * probs.mean(0)).sum())))


__all__ = ["ExpertResult", "LayerStats", "Parcel", "Split", "all_to_all", "moe_layer",
           "simulate_experts"]
