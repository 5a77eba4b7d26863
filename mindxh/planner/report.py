"""Plans as text (one plan, or several hardware profiles side by side) and as JSON-ready dicts.
Library code returns strings; `mindxh plan` prints them."""
from __future__ import annotations

from mindxh.config.hardware import GiB
from mindxh.planner.memory import activation_elements
from mindxh.planner.params import stage_layers
from mindxh.planner.plan import Plan

__all__ = ["render", "render_side_by_side", "side_by_side_dict", "throughput_ratios"]

_ZERO = {"none": "", "zero1": "optimizer /dp", "zero2": "optimizer, gradients /dp",
         "zero3": "optimizer, gradients, weights /dp"}


def _g(x: float) -> str:
    return f"{x / GiB:7.2f} GiB"


def _flop(x: float) -> str:
    for scale, unit in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
        if x >= scale:
            return f"{x / scale:,.2f} {unit}"
    return f"{x:,.0f} FLOP"


def _rate(x: float) -> str:
    return f"{x / 1e9:,.0f} GB/s"


def _per_layer(s, stage: int) -> float:
    """Mean activation elements per token and layer on `stage` (MoE and dense layers differ)."""
    layers = stage_layers(s.model, s.pp, stage)
    return sum(activation_elements(s, index=i) for i in layers) / max(1, len(layers))


def render(plan: Plan) -> str:
    s, m, e, prof = plan.setup, plan.memory, plan.estimate, plan.profile
    nodes = -(-s.devices // s.devices_per_node)
    lines = [
        f"plan: {plan.recipe_name} on {s.devices} x {prof.label} ({nodes} node(s) of "
        f"{s.devices_per_node}: {prof.intra_link} inside, {prof.inter_link} across)",
        f"layout: data {s.dp} x tensor {s.tp} x pipeline {s.pp}"
        f"{f' x expert {s.ep}' if s.ep > 1 else ''}; micro-batch {s.micro_batch} x {s.seq} "
        f"tokens, {s.micro_batches} per flush, grad_accum {s.accum}: "
        f"{s.tokens_per_step:,} tokens per step",
        f"        optimizer_shard {s.zero}, recompute {s.recompute}, sequence_parallel "
        f"{'on' if s.sequence_parallel else 'off'}, vocab_parallel "
        f"{'on' if s.vocab_parallel else 'off'}, {s.compute_dtype} compute, "
        f"float32 master weights",
        f"parameters: {plan.parameters['total']:,} ({plan.parameters['embedding']:,} in the "
        f"input embedding); {m.parameters:,} on one rank of stage {m.stage}"
        + (f"; {plan.parameters['active']:,} active per token"
           if plan.parameters['active'] != plan.parameters['total'] else ""),
        "",
        f"memory per device, pipeline stage {m.stage} of {s.pp} (the fullest):",
        f"  weights        {_g(m.weights)}  float32{' /dp' if s.zero == 'zero3' else ''}",
        f"  gradients      {_g(m.gradients)}  float32"
        f"{' /dp' if s.zero in ('zero2', 'zero3') else ''}",
        f"  optimizer      {_g(m.optimizer)}  AdamW m, v float32"
        f"{' /dp' if s.zero != 'none' else ''}",
        f"  activations    {_g(m.activations)}  {m.in_flight} micro-batch(es) in flight x "
        f"{s.model.num_layers // s.pp} layers x {_per_layer(s, m.stage):,.0f} elements/token "
        f"({s.recompute} recompute)",
        f"  logits         {_g(m.logits)}  last stage: {s.compute_dtype} logits + float32 softmax",
        f"  working        {_g(m.working)}  one layer's weights in {s.compute_dtype}",
        f"  comm buffers   {_g(m.comm_buffers)}  per communication group "
        f"{prof.comm_buffer_bytes / 1e6:.0f} MB",
        f"  reserve        {_g(m.reserve)}  runtime, kernels",
        f"  total          {_g(m.total)}  of {prof.hbm_bytes / GiB:.1f} GiB HBM "
        f"({m.total / prof.hbm_bytes:.0%})"
        + (f"; pool {m.pool / GiB:.1f} of max_device_memory {s.max_device_memory / GiB:.1f} GiB"
           if s.max_device_memory else ""),
        "",
        "communication per step, per device:",
    ]
    if not plan.comm:
        lines.append("  none (one device)")
    for c in plan.comm:
        where = "inside a node" if c.intra else "across nodes"
        lines.append(f"  {c.dimension:9s} {c.bytes_per_step / 1e9:9.2f} GB  {c.link} ({where}, "
                     f"{_rate(c.bandwidth)}): {c.seconds:.3f} s, exposed {c.exposed_s:.3f} s"
                     f"  [{c.collective}]")
    lines += [
        "",
        f"time (roofline: matmuls at {prof.gemm_efficiency:.0%} and attention at "
        f"{prof.attention_efficiency:.0%} of the {_flop(e.peak_flops)}/s "
        f"{s.compute_dtype} peak; element-wise at {prof.hbm_bandwidth / 1e12:.2f} TB/s; "
        "tensor/pipeline traffic not overlapped):",
        f"  micro-batch    {e.micro_batch_s:.4f} s = compute {e.compute_s:.4f} + memory "
        f"{e.memory_s:.4f} + tensor {e.tensor_s:.4f} + pipeline {e.pipeline_s:.4f}"
        + (f" + expert {e.expert_s:.4f}" if e.expert_s else ""),
        f"  bubble         {e.bubble:.1%} = (p-1)/(m+p-1) with p={s.pp}, m={s.micro_batches}",
        f"  step           {e.step_s:.3f} s = {s.accum} x {s.micro_batches + s.pp - 1} micro-batch "
        f"times + optimizer {e.optimizer_s:.3f} + exposed data-parallel {e.data_exposed_s:.3f}",
        f"  throughput     {e.tokens_per_s_per_device:,.0f} tokens/s per device, "
        f"{e.tokens_per_s_per_device * s.devices:,.0f} in all; MFU {e.mfu:.1%} "
        f"({_flop(e.model_flops_per_token)}/token, 6N + 12LHQT)",
    ]
    lines += [f"note: {n}" for n in plan.notes]
    lines.append("")
    if plan.fits:
        lines.append("fits: yes")
    else:
        lines.append(f"fits: NO ({len(plan.reasons)} reason(s))")
        lines += [f"  - {r}" for r in plan.reasons]
    return "\n".join(lines)


def throughput_ratios(plans: list[Plan]) -> dict[str, float]:
    """tokens/s per device of every plan relative to the first."""
    base = plans[0].estimate.tokens_per_s_per_device
    return {p.profile.name: p.estimate.tokens_per_s_per_device / base for p in plans}


def render_side_by_side(plans: list[Plan]) -> str:
    """The same recipe on several profiles, one column each, with the throughput ratio."""
    ratios = throughput_ratios(plans)
    rows: list[tuple[str, list[str]]] = [
        ("hardware", [p.profile.label for p in plans]),
        ("devices, nodes", [f"{p.setup.devices}, {-(-p.setup.devices // p.setup.devices_per_node)}"
                            for p in plans]),
        ("HBM per device", [f"{p.profile.hbm_bytes / GiB:.0f} GiB" for p in plans]),
        ("memory needed", [f"{p.memory.total / GiB:.1f} GiB" for p in plans]),
        ("peak (compute dtype)", [f"{_flop(p.estimate.peak_flops)}/s" for p in plans]),
        ("step time", [f"{p.estimate.step_s:.3f} s" for p in plans]),
        ("tokens/s per device", [f"{p.estimate.tokens_per_s_per_device:,.0f}" for p in plans]),
        ("MFU", [f"{p.estimate.mfu:.1%}" for p in plans]),
        (f"throughput vs {plans[0].profile.label}", [f"{ratios[p.profile.name]:.2f}x"
                                                    for p in plans]),
        ("fits", ["yes" if p.fits else f"NO ({len(p.reasons)})" for p in plans]),
    ]
    width = max(len(r[0]) for r in rows) + 2
    cols = [max(len(r[1][i]) for r in rows) + 2 for i in range(len(plans))]
    out = [f"plan: {plans[0].recipe_name}, side by side"]
    for label, cells in rows:
        out.append(label.ljust(width) + "".join(c.rjust(w) for c, w in zip(cells, cols)))
    for p in plans:
        out += [f"{p.profile.label}: note: {n}" for n in p.notes]
        out += [f"{p.profile.label}: {r}" for r in p.reasons]
    return "\n".join(out)


def side_by_side_dict(plans: list[Plan]) -> dict:
    return {"plans": [p.to_dict() for p in plans], "throughput_ratio": throughput_ratios(plans),
            "fits": all(p.fits for p in plans)}
