"""A training plan for one recipe on one hardware profile: memory per device, communication
per parallel dimension, an estimated step time, and every reason the plan cannot run.

The pieces are separate models (memory.py, comm.py, estimate.py) over one `Setup`; this module
joins them and decides fit. A plan that does not fit is still fully computed, so the user sees
by how much it misses.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from mindxh.config.hardware import GiB, HardwareProfile, lookup_profile
from mindxh.errors import MindxhError
from mindxh.planner.comm import CommLine, communication
from mindxh.planner.estimate import Estimate, estimate
from mindxh.planner.memory import StageMemory, fullest_stage
from mindxh.planner.params import parameter_counts
from mindxh.planner.setup import Setup

__all__ = ["HardwareError", "Plan", "make_plan", "profile_for"]


class HardwareError(MindxhError):
    """An unknown hardware name, or a dtype the hardware has no peak for."""


def profile_for(name: str) -> HardwareProfile:
    """The named profile; for `cpu`, with this machine's measured GEMM peak (cached probe,
    mindxh.utils.flops) in place of the nominal one."""
    try:
        profile = lookup_profile(name)
    except KeyError as exc:
        raise HardwareError(f"unknown hardware {name!r}: {exc.args[0]}") from None
    if profile.name == "cpu":
        from mindxh.utils.flops import default_cpu_peak_cache, measure_cpu_peak

        peak = measure_cpu_peak()
        sources = {**profile.sources, "peak": f"measured float32 GEMM probe ({peak / 1e9:.0f} "
                   f"GFLOP/s), cached at {default_cpu_peak_cache()}"}
        profile = replace(profile, peak={k: peak for k in profile.peak}, sources=sources)
    return profile


@dataclass
class Plan:
    recipe_name: str
    setup: Setup
    parameters: dict[str, int]
    memory: StageMemory  # the fullest stage
    stages: list[StageMemory]
    comm: list[CommLine]
    estimate: Estimate
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.reasons

    @property
    def profile(self) -> HardwareProfile:
        return self.setup.profile

    def to_dict(self) -> dict:
        s = self.setup
        return {
            "recipe": self.recipe_name,
            "hardware": {"name": s.profile.name, "label": s.profile.label,
                         "hbm_bytes": s.profile.hbm_bytes, "sources": s.profile.sources},
            "layout": {"devices": s.devices, "data_parallel": s.dp, "tensor": s.tp,
                       "pipeline": s.pp, "expert": s.ep, "micro_batches": s.micro_batches,
                       "micro_batch_size": s.micro_batch, "grad_accum": s.accum,
                       "seq_len": s.seq, "sequence_parallel": s.sequence_parallel,
                       "vocab_parallel": s.vocab_parallel, "optimizer_shard": s.zero,
                       "recompute": s.recompute, "compute_dtype": s.compute_dtype,
                       "devices_per_node": s.devices_per_node,
                       "nodes": -(-s.devices // s.devices_per_node),
                       "tokens_per_step": s.tokens_per_step},
            "parameters": self.parameters,
            "memory": {"fullest_stage": self.memory.as_dict(),
                       "stages": [m.as_dict() for m in self.stages],
                       "limit_bytes": s.profile.hbm_bytes,
                       "max_device_memory_bytes": s.max_device_memory},
            "communication": [c.as_dict() for c in self.comm],
            "estimate": self.estimate.as_dict(),
            "fits": self.fits,
            "reasons": list(self.reasons),
            "notes": list(self.notes),
        }


def make_plan(recipe, profile: HardwareProfile, problems: Optional[list[str]] = None,
              recipe_name: Optional[str] = None) -> Plan:
    """Plan `recipe` on `profile`; `problems` are the recipe's own parallel problems (from
    `load_for_plan`), reported first among the reasons."""
    s = Setup.from_recipe(recipe, profile)
    notes = []
    if s.max_device_memory is not None and not _same_hardware(recipe.cluster.hardware, profile):
        notes.append(f"compile.max_device_memory is set for {recipe.cluster.hardware}; not applied "
                     f"to {profile.label}")
        s = replace(s, max_device_memory=None)
    try:
        profile.peak_flops(s.compute_dtype)
    except ValueError as exc:
        raise HardwareError(f"precision.compute_dtype={s.compute_dtype}: {exc}") from None
    fullest, stages = fullest_stage(s)
    params_max = max(m.parameters for m in stages)
    est, comm = estimate(s, params_max, communication(s, params_max))
    reasons = list(problems or [])
    reasons += _memory_reasons(s, fullest)
    if recipe.cluster.devices_per_node > profile.scale_up and profile.name != "cpu":
        notes.append(f"cluster.devices_per_node={recipe.cluster.devices_per_node} exceeds the "
                     f"scale-up domain of {profile.label} ({profile.scale_up}); planned with "
                     f"{profile.scale_up}")
    counts = parameter_counts(recipe.model, s.vocab)
    moe = recipe.model.moe
    if moe.enabled:
        notes.append(f"mixture of experts: {counts['active']:,} of {counts['total']:,} parameters "
                     f"active per token ({moe.experts_per_token} of {moe.num_experts} routed "
                     f"experts, split over parallel.expert={s.ep} x tensor={s.tp} ranks); MFU "
                     f"counts the active ones")
    return Plan(recipe_name or recipe.name, s, counts, fullest, stages, comm, est, reasons, notes)


def _same_hardware(name: str, profile: HardwareProfile) -> bool:
    try:
        return lookup_profile(name).name == profile.name
    except KeyError:
        return False


def _gib(x: float) -> str:
    return f"{x / GiB:.1f} GiB"


def _memory_reasons(s: Setup, m: StageMemory) -> list[str]:
    out = []
    hbm = s.profile.hbm_bytes
    if m.total > hbm:
        out.append(f"memory: pipeline stage {m.stage} needs {_gib(m.total)} per device "
                   f"(model states {_gib(m.model_states)}, activations {_gib(m.activations)} for "
                   f"{m.in_flight} micro-batch(es) in flight, buffers and reserve "
                   f"{_gib(m.comm_buffers + m.reserve + m.logits + m.working)}) but "
                   f"{s.profile.label} has {_gib(hbm)}: over by {_gib(m.total - hbm)}")
    if s.max_device_memory is not None and m.pool > s.max_device_memory:
        out.append(f"compile.max_device_memory: pipeline stage {m.stage} needs {_gib(m.pool)} "
                   f"in MindSpore's memory pool, the recipe allows {_gib(s.max_device_memory)}: "
                   f"over by {_gib(m.pool - s.max_device_memory)}")
    if s.max_device_memory is not None and \
            s.max_device_memory + m.comm_buffers + m.reserve > hbm:
        out.append(f"compile.max_device_memory={_gib(s.max_device_memory)} leaves no room for "
                   f"communication buffers and runtime ({_gib(m.comm_buffers + m.reserve)}) in "
                   f"{_gib(hbm)}")
    return out
