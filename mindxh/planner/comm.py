"""Communication per optimizer step, per device, for each parallel dimension, and the link
that carries it (a group inside one scale-up domain uses HCCS / NVLink / UB, else RoCE / IB).

Volumes are what one device sends, with ring/mesh algorithms: an all-reduce of M bytes over
n devices sends 2(n-1)/n * M, a reduce-scatter or all-gather (n-1)/n * M. Time is volume over
the per-device link bandwidth, with no latency term (messages here are megabytes).
    TP: per layer and micro-batch 2 all-reduces forward + 2 backward (+2 with full recompute)
        of the activations b*s*h (sequence parallel swaps each for an all-gather and a
        reduce-scatter: same volume); vocab-parallel embedding/head add one per micro-batch.
    PP: each micro-batch sends its activations forward and their gradient backward,
        b*s*h (/t with sequence parallel), over one peer link.
    DP: gradients (float32) all-reduced once per step; zero1 = reduce-scatter + all-gather of
        the updated weights; zero2 reduce-scatters every flush (sharded accumulation); zero3
        also all-gathers the weights for the forward and the backward of every flush.
    EP: all-to-all of routed tokens, out to the experts and back, forward and backward, per
        MoE layer: k * capacity_factor slots of b*s*h per micro-batch (mixture-of-experts only).
        Expert gradients reduce over data_parallel / expert ranks; the DP line counts them
        over all data-parallel ranks (an overestimate by at most a factor (d-1)/d / (d/e-1)/(d/e)).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from mindxh.planner.params import routed_slots_per_token, stage_layers
from mindxh.planner.setup import Setup

__all__ = ["CommLine", "communication"]


@dataclass(frozen=True)
class CommLine:
    dimension: str  # tensor | pipeline | data | expert
    collective: str
    bytes_per_step: float  # sent by one device
    link: str
    intra: bool  # inside one scale-up domain
    bandwidth: float  # B/s per device on that link
    exposed_s: float = 0.0  # filled in by the time model: what overlap does not hide

    @property
    def seconds(self) -> float:
        return self.bytes_per_step / self.bandwidth if self.bandwidth else 0.0

    def exposed(self, seconds: float) -> "CommLine":
        return replace(self, exposed_s=max(0.0, seconds))

    def as_dict(self) -> dict:
        return {"dimension": self.dimension, "collective": self.collective,
                "bytes_per_step": self.bytes_per_step, "link": self.link, "intra_node": self.intra,
                "bandwidth_bytes_per_s": self.bandwidth, "seconds": self.seconds,
                "exposed_seconds": self.exposed_s}


def _link(s: Setup, group: int, stride: int, peer: bool = False) -> tuple[str, bool, float]:
    prof = s.profile
    intra = s.intra(group, stride)
    if peer:  # point to point: one link of a mesh, the whole port on a switch
        bw = (prof.intra_peer_bandwidth or prof.intra_bandwidth) if intra else prof.inter_bandwidth
    else:
        bw = prof.link_bandwidth(group, intra)
    return (prof.intra_link if intra else prof.inter_link), intra, bw


def tp_collectives_per_micro_batch(s: Setup) -> int:
    per_layer = 4 + (2 if s.recompute == "full" else 0)
    vocab = (2 if s.pp == 1 else 1) if s.vocab_parallel else 0
    return per_layer * (s.model.num_layers // s.pp) + vocab


def communication(s: Setup, stage_params: int) -> list[CommLine]:
    """Every dimension with more than one rank; `stage_params` is the fullest stage's count."""
    lines: list[CommLine] = []
    micro = s.micro_batches * s.accum  # micro-batches per step on one pipeline
    act = s.tokens_per_micro_batch * s.model.hidden_size * s.compute_bytes
    if s.tp > 1:
        t = s.tp
        volume = tp_collectives_per_micro_batch(s) * 2 * (t - 1) / t * act * micro
        name = "all-gather + reduce-scatter" if s.sequence_parallel else "all-reduce"
        lines.append(CommLine("tensor", f"{name} of activations, per layer", volume,
                              *_link(s, t, 1)))
    if s.pp > 1:
        volume = 2 * act / (s.tp if s.sequence_parallel else 1) * micro
        lines.append(CommLine("pipeline", "send/recv activations and gradients", volume,
                              *_link(s, s.pp, s.tp * s.dp, peer=True)))
    if s.dp > 1:
        d = s.dp
        frac = (d - 1) / d
        grads, weights = stage_params * 4.0, stage_params * float(s.param_bytes)
        volume, name = {
            "none": (2 * frac * grads, "all-reduce of gradients"),
            "zero1": (frac * (grads + weights), "reduce-scatter gradients + all-gather weights"),
            "zero2": (frac * (s.accum * grads + weights),
                      "reduce-scatter gradients every flush + all-gather weights"),
            "zero3": (s.accum * frac * (grads + 2 * weights),
                      "reduce-scatter gradients + all-gather weights fwd/bwd, every flush"),
        }[s.zero]
        lines.append(CommLine("data", name, volume, *_link(s, d, s.tp)))
    moe = s.model.moe
    if s.ep > 1 and moe.enabled:
        # the busiest stage's MoE layers; each sends its routed slots out and back, forward and
        # backward (4 all-to-alls); a rank keeps the 1/ep of them bound for its own experts
        layers = max(sum(moe.is_moe_layer(i) for i in stage_layers(s.model, s.pp, st))
                     for st in range(s.pp))
        volume = 4 * (s.ep - 1) / s.ep * act * routed_slots_per_token(moe) * micro * layers
        lines.append(CommLine("expert", "all-to-all of routed tokens", volume,
                              *_link(s, s.ep, s.tp)))
    return lines
