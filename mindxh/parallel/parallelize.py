"""Apply a model family's parallel plan to a built model (torchtitan's parallelize pattern).

The model is written for one device; `apply_plan(model, recipe)` walks it and attaches what
the family's tables (mindxh/models/llama/parallelize.py) say: shard strategies on primitives,
`pipeline_stage` on cells, recompute flags. It returns a `PlanRecord` of everything applied
and everything the plan wanted but could not attach. Strategies take effect only when
MindSpore compiles with semi-auto parallel (mindxh/parallel/context.py), i.e. on Ascend/GPU;
on CPU they are built and read back (`prim.in_strategy`), which is what the tests check.

Strategy convention (`prim.shard(in_strategy)`): one tuple per input, one int per axis of
that input *as stored* (MatMul(transpose_b=True) takes W as [out, in]): how many slices the
axis is cut into. dp = parallel.data_parallel, tp = parallel.tensor. Linear is
x [N = batch*seq, in] @ W^T:
  colwise    ((dp, 1), (tp, 1))    rows by dp, W by out; output [N, out] split (dp, tp), no
                                   collective
  rowwise    ((dp, tp), (1, tp))   the contracted `in` split on both operands: each device
                                   holds partial sums, MindSpore all-reduces over tp; with
                                   sequence parallel, out_strategy ((dp*tp, 1),) turns that
                                   into a reduce-scatter onto the tokens (Megatron-SP)
  heads      ((dp, tp, 1, 1), (dp, tp, 1, 1))   q [B, KV, G*S, D] x k [B, KV, T, D]^T, KV heads by tp
  vocab_out  ((dp, 1), (tp, 1)) with parallel.vocab_parallel (logits split by vocab), else
             ((dp*tp, 1), (1, 1)) (tokens over every device of the stage, head replicated)
Mixture of experts (the family's MOE_PLAN, only for a model with experts); ep =
parallel.expert, a divisor of dp: expert parallel reuses the data-parallel ranks, so the
device matrix stays dp x tp and each expert's slots are split over the remaining dp / ep:
  router          ((dp, 1), (1, 1))                   replicated weight, tokens by dp
  expert_colwise  ((ep, dp/ep, 1), (ep, tp, 1))       x [E, C, H] x W [E, F, H]: experts by ep,
                                                      F by tp
  expert_rowwise  ((ep, dp/ep, tp), (ep, 1, tp))      x [E, C, F] x W [E, H, F]: F contracted,
                                                      all-reduce over tp
Ops model.py calls functionally (ops.softmax, ops.matmul, ops.gather, RMSNorm's arithmetic)
have no primitive object to shard: they are listed in `PlanRecord.functional` with the
strategy each would need, and MindSpore's default strategy applies to them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from mindxh.models.llama import parallelize as llama_plan
from mindxh.parallel.context import needs_semi_auto


class PlanError(ValueError):
    """The plan cannot be applied to this model as configured."""


@dataclass
class PlanRecord:
    """What `apply_plan` did, by path (`Decoder.cells_and_names()` names)."""

    parallel_mode: str  # stand_alone | data_parallel | semi_auto_parallel
    styles: dict[str, str] = field(default_factory=dict)  # primitive path -> style
    strategies: dict[str, tuple] = field(default_factory=dict)  # primitive path -> in_strategy
    out_strategies: dict[str, tuple] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)  # cell path -> pipeline stage
    recompute: list[str] = field(default_factory=list)  # cells set to recompute
    sequence: list[str] = field(default_factory=list)  # cells planned sequence-parallel
    functional: dict[str, str] = field(default_factory=dict)  # planned, not attachable
    unmatched: list[str] = field(default_factory=list)  # plan paths absent from this model
    micro_batches: int = 1  # for the train step's pipeline wrapper


def strategy(style: str, parallel) -> tuple[tuple, tuple | None]:
    """(in_strategy, out_strategy or None) for a style under `parallel` (see the module doc)."""
    dp, tp = parallel.data_parallel, parallel.tensor
    if style == "colwise":
        return ((dp, 1), (tp, 1)), None
    if style == "rowwise":
        return ((dp, tp), (1, tp)), (((dp * tp, 1),) if parallel.sequence_parallel else None)
    if style == "heads":
        return ((dp, tp, 1, 1), (dp, tp, 1, 1)), None
    if style == "router":
        return ((dp, 1), (1, 1)), None
    ep = parallel.expert
    if style == "expert_colwise":
        return ((ep, dp // ep, 1), (ep, tp, 1)), None
    if style == "expert_rowwise":
        return ((ep, dp // ep, tp), (ep, 1, tp)), None
    if style == "vocab_out":
        if parallel.vocab_parallel:
            return ((dp, 1), (tp, 1)), None
        return ((dp * tp, 1), (1, 1)), None
    raise PlanError(f"unknown parallel style {style!r}")


def matches(pattern: str, path: str) -> bool:
    """Segment-wise match: `*` stands for one dotted segment (a layer index), never several."""
    p, s = pattern.split(".") if pattern else [], path.split(".") if path else []
    return len(p) == len(s) and all(fnmatchcase(b, a) for a, b in zip(p, s))


def _primitives(model):
    """(path, primitive) of every primitive attribute of every cell."""
    for path, cell in model.cells_and_names():
        for name, prim in cell._primitives.items():  # MindSpore's registry of a cell's primitives
            if prim is not None:
                yield (f"{path}.{name}" if path else name), prim


def plan_problems(model_cfg, parallel) -> list[str]:
    """What stops this family's plan from applying to a model built from `model_cfg`."""
    problems = []
    experts = model_cfg.moe.num_experts
    if parallel.expert > 1:
        if not experts:
            problems.append(f"parallel.expert={parallel.expert}: the model is dense (no experts: "
                            "model.moe.num_experts is 0)")
        elif experts % parallel.expert:
            problems.append(f"parallel.expert={parallel.expert} does not divide "
                            f"model.moe.num_experts={experts}")
        if parallel.data_parallel % parallel.expert:
            problems.append(f"parallel.expert={parallel.expert} does not divide data_parallel="
                            f"{parallel.data_parallel} (experts are split over data-parallel ranks)")
    if parallel.pipeline > 1:
        if model_cfg.num_layers % parallel.pipeline:
            problems.append(f"pipeline={parallel.pipeline} does not divide num_layers="
                            f"{model_cfg.num_layers}")
        if model_cfg.tie_embeddings:
            problems.append("tied embeddings put the output head (Decoder.matmul_t) in the "
                            "Decoder's own cell, i.e. on pipeline stage 0, not the last; set "
                            "model.tie_embeddings: false for pipeline parallel")
    return problems


def apply_plan(model, recipe) -> PlanRecord:
    """Attach the recipe's parallel plan to a freshly built Decoder (once: MindSpore lets a
    cell's recompute be configured only once)."""
    return parallelize(model, recipe.parallel)


def parallelize(model, parallel, plan=llama_plan) -> PlanRecord:
    """Tensor/sequence strategies, pipeline stages and recompute from `plan` (a module or
    object with the family tables) onto `model`; see the module doc."""
    problems = plan_problems(model.cfg, parallel)
    if problems:
        raise PlanError("; ".join(problems))
    semi = needs_semi_auto(parallel)
    mode = "semi_auto_parallel" if semi else (
        "data_parallel" if parallel.data_parallel > 1 else "stand_alone")
    record = PlanRecord(parallel_mode=mode, micro_batches=parallel.micro_batches)
    cells = dict(model.cells_and_names())
    if semi:
        _shard(model, cells, parallel, plan, record)
    if parallel.pipeline > 1:
        _stages(cells, parallel.pipeline, plan, record)
    if parallel.recompute != "none":
        for pattern in plan.RECOMPUTE[parallel.recompute]:
            for path, cell in cells.items():
                if matches(pattern, path):
                    cell.recompute()
                    record.recompute.append(path)
    return record


def _shard(model, cells, parallel, plan, record: PlanRecord) -> None:
    prims = dict(_primitives(model))
    moe = getattr(plan, "MOE_PLAN", {}) if model.cfg.moe.enabled else {}
    table = {**plan.TENSOR_PLAN, **moe}
    for pattern, style in table.items():
        targets = [(f"{p}.matmul", getattr(c, "matmul", None)) for p, c in cells.items()
                   if matches(pattern, p)]
        targets += [(p, prim) for p, prim in prims.items() if matches(pattern, p)]
        if not targets:
            record.unmatched.append(pattern)
        for path, prim in targets:
            if prim is None:
                raise PlanError(f"plan entry {pattern!r} names {path}, which has no primitive "
                                "(a Linear has `matmul`)")
            in_strategy, out_strategy = strategy(style, parallel)
            if out_strategy is None:
                prim.shard(in_strategy)
            else:
                prim.shard(in_strategy, out_strategy=out_strategy)
                record.out_strategies[path] = out_strategy
            record.styles[path] = style
            record.strategies[path] = in_strategy
    if parallel.sequence_parallel:
        record.sequence = [p for pattern in plan.SEQUENCE_PLAN for p in cells if matches(pattern, p)]
    record.functional = dict(plan.FUNCTIONAL)


def _stages(cells, stages: int, plan, record: PlanRecord) -> None:
    """Layers split evenly in order; the first cells on stage 0, the last on the last."""
    layers = cells[plan.PIPELINE_LAYERS]
    per_stage = len(layers) // stages
    for path in plan.PIPELINE_FIRST:
        _set_stage(cells, path, 0, record)
    for i, layer in enumerate(layers):
        layer.pipeline_stage = i // per_stage
        record.stages[f"{plan.PIPELINE_LAYERS}.{i}"] = i // per_stage
    for path in plan.PIPELINE_LAST:
        _set_stage(cells, path, stages - 1, record)


def _set_stage(cells, path: str, stage: int, record: PlanRecord) -> None:
    if path in cells:  # e.g. no lm_head with tied embeddings
        cells[path].pipeline_stage = stage
        record.stages[path] = stage


__all__ = ["PlanError", "PlanRecord", "apply_plan", "matches", "parallelize", "plan_problems",
           "strategy"]
