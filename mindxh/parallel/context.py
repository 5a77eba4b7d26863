"""The process-wide MindSpore settings a recipe implies, as plain data, then applied.

`settings(recipe)` is pure (no MindSpore import), so the mapping from a recipe to MindSpore
can be read, diffed and tested on any machine; `apply_context(recipe)` hands the same dicts
to MindSpore. Keys and values are MindSpore 2.10's (`set_context`, `set_auto_parallel_context`):
several set_context keys are deprecated there in favour of newer APIs but still accepted;
Ascend-only ones (`max_device_memory`, `ascend_config`) are ignored, with a warning, on CPU.

Which parallel mode:
  one device, nothing split           {} (MindSpore's stand_alone default)
  data parallel only                  data_parallel: every rank runs the whole graph on its
                                      batch and gradients are averaged (gradients_mean=True)
  tensor / pipeline / expert / sequence parallel, or an optimizer shard (see needs_semi_auto)
                                      semi_auto_parallel: the sharded graph computes the
                                      single-device function of the global batch (the loss's
                                      mean already spans all ranks), so gradients are summed
                                      (gradients_mean=False, as mindformers runs it); each
                                      data-parallel rank loads its own `train.batch_size` rows
                                      (dataset_strategy splits dim 0 by data_parallel only)
"""
from __future__ import annotations

from dataclasses import dataclass, field

GRAPH_MODE, PYNATIVE_MODE = 0, 1  # mindspore.GRAPH_MODE / PYNATIVE_MODE
OPTIMIZER_LEVELS = {"zero1": "level1", "zero2": "level2", "zero3": "level3"}
# zero1: optimizer state sharded; zero2: + gradients; zero3: + weights (gathered before use)


@dataclass(frozen=True)
class Settings:
    """What to hand MindSpore: `mindspore.set_device(device)`, `set_context(**context)`,
    `set_auto_parallel_context(**auto_parallel)` (empty: leave the stand-alone default)."""

    device: str
    context: dict = field(default_factory=dict)
    auto_parallel: dict = field(default_factory=dict)

    @property
    def parallel_mode(self) -> str:
        return self.auto_parallel.get("parallel_mode", "stand_alone")


def needs_semi_auto(parallel) -> bool:
    """True when the plan splits the model itself (not only the batch), or its optimizer
    state: MindSpore must then compile a sharded graph (semi-auto parallel), which it refuses
    on CPU. Optimizer sharding counts because data_parallel mode shards only MindSpore's own
    Lamb / AdamWeightDecay; mindxh's AdamW is a plain cell (train/optim.py), which semi-auto
    parallel shards like any other (mindformers runs zero the same way)."""
    return (parallel.tensor > 1 or parallel.pipeline > 1 or parallel.expert > 1
            or parallel.sequence_parallel or parallel.optimizer_shard != "none")


def context_kwargs(recipe) -> dict:
    """`set_context` kwargs: execution mode and graph compilation (keys left out when unset)."""
    c = recipe.compile
    kwargs: dict = {"mode": GRAPH_MODE if c.mode == "graph" else PYNATIVE_MODE,
                    "jit_config": {"jit_level": c.jit_level},
                    "memory_optimize_level": c.memory_optimize_level}
    if c.max_device_memory is not None:
        kwargs["max_device_memory"] = c.max_device_memory.strip().upper()
    if c.precision_mode is not None:
        kwargs["ascend_config"] = {"precision_mode": c.precision_mode}
    if c.enable_graph_kernel:
        kwargs["enable_graph_kernel"] = True
        if c.graph_kernel_flags:
            kwargs["graph_kernel_flags"] = c.graph_kernel_flags
    return kwargs


def auto_parallel_kwargs(recipe, dataset_inputs: int = 2) -> dict:
    """`set_auto_parallel_context` kwargs. `dataset_inputs`: how many [B, S] tensors the train
    step takes from the dataset (tokens and targets; 4 with packed positions/segment ids)."""
    p = recipe.parallel
    semi = needs_semi_auto(p)
    if p.devices == 1 and not semi:
        return {}
    if semi:
        kwargs: dict = {"parallel_mode": "semi_auto_parallel", "device_num": p.devices,
                        "gradients_mean": False, "pipeline_stages": p.pipeline,
                        "dataset_strategy": ((p.data_parallel, 1),) * dataset_inputs}
    else:
        kwargs = {"parallel_mode": "data_parallel", "device_num": p.devices,
                  "gradients_mean": True}
    if p.optimizer_shard != "none":
        kwargs["enable_parallel_optimizer"] = True
        kwargs["parallel_optimizer_config"] = {"optimizer_level": OPTIMIZER_LEVELS[p.optimizer_shard]}
    return kwargs


def settings(recipe, dataset_inputs: int = 2) -> Settings:
    """Everything process-wide the recipe asks of MindSpore, without touching MindSpore."""
    return Settings(device=recipe.compile.device, context=context_kwargs(recipe),
                    auto_parallel=auto_parallel_kwargs(recipe, dataset_inputs))


def cpu_refusal(recipe) -> str | None:
    """Why this recipe cannot run on compile.device=CPU, or None when it can."""
    p = recipe.parallel
    if recipe.compile.device != "CPU" or not needs_semi_auto(p):
        return None
    split = [f"{key}={getattr(p, key)}" for key in ("tensor", "pipeline", "expert")
             if getattr(p, key) > 1] + (["sequence_parallel=true"] if p.sequence_parallel else [])
    split += [f"optimizer_shard={p.optimizer_shard}"] if p.optimizer_shard != "none" else []
    return (f"parallel {', '.join(split)} needs MindSpore semi-auto parallel, which compiles only "
            f"on Ascend (or GPU), not on compile.device=CPU; `mindxh plan RECIPE` checks this plan "
            f"here (shapes, strategies, memory) without running it. On CPU, use data parallel only.")


def apply_context(recipe, dataset_inputs: int = 2, device: str | None = None) -> Settings:
    """Apply `settings(recipe)`: device first (it decides which set_context keys apply), then
    the context, then (after a reset, so no earlier job's setting leaks) the parallel context.
    `device` overrides compile.device (tests apply an Ascend recipe on CPU so MindSpore checks
    its keys). Communication (`mindspore.communication.init`) is the launcher's job."""
    import mindspore as ms

    s = settings(recipe, dataset_inputs)
    ms.set_device(device or s.device)
    ms.set_context(**s.context)
    ms.reset_auto_parallel_context()
    if s.auto_parallel:
        ms.set_auto_parallel_context(**s.auto_parallel)
    return s


__all__ = ["Settings", "apply_context", "auto_parallel_kwargs", "context_kwargs", "cpu_refusal",
           "needs_semi_auto", "settings"]
