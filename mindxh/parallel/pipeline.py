"""Pipeline parallel in the train step: micro-batching and the matching gradient reducer.

`apply_plan` puts each layer on its stage (`cell.pipeline_stage`) and the parallel context
sets `pipeline_stages`; MindSpore then also needs the loss network wrapped in its pipeline
cell, which cuts each step's batch into `parallel.micro_batches` micro-batches (their losses
summed) so the stages can work on different micro-batches at once, and a gradient reducer
that reads the gradients the compiler accumulates over the micro-batches (`accu_grads.*`
parameters), divides them by `micro_batches` (the mean, as MindSpore's own pipeline train
cell and mindformers scale them) and zeroes the buffers. This is MindSpore 2.10's
functional recipe (tutorial "Pipeline Parallel"): `Pipeline(loss_cell, micro_size)`, then
`value_and_grad`, the reducer, the optimizer.

Which classes: `mindspore.parallel.nn.Pipeline` (the documented successor of
`nn.PipelineCell`). The reducer is `mindspore.nn.PipelineGradReducer`, not its successor
`mindspore.parallel.nn.PipelineGradReducer`: in 2.10 the latter's construct reads an
undefined `grads` unless the optimizer is sharded, so it fails to compile with
`NameError: The name 'grads' is not defined` (reproduced on CPU; tests/test_pipeline_step.py
notices when a MindSpore release fixes it). Only the graph with these cells is Ascend/GPU
work: everything here is built, and checked, on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Microbatching:
    """How the train step runs a pipelined model: `micro_batches` per step; `opt_shard`:
    the optimizer is sharded (the reducer then takes the gradients as the compiler hands
    them, not its own accumulation buffers)."""

    micro_batches: int
    opt_shard: bool

    def wrap(self, loss_cell):
        """The loss network cut into micro-batches: (*batch) -> sum of the micro-batch losses."""
        from mindspore.parallel.nn import Pipeline

        return Pipeline(loss_cell, self.micro_batches)

    def grad_reducer(self, params):
        """grads -> the mean over micro-batches of `params`' gradients (buffers then zeroed)."""
        from mindspore import nn

        return nn.PipelineGradReducer(params, scale_sense=float(self.micro_batches),
                                      opt_shard=self.opt_shard)


def microbatching(parallel) -> Microbatching | None:
    """The train step's micro-batching for `parallel`; None without pipeline parallel, so
    single-device and data-parallel steps build exactly the graph they always did."""
    if parallel.pipeline == 1:
        return None
    return Microbatching(parallel.micro_batches, parallel.optimizer_shard != "none")


__all__ = ["Microbatching", "microbatching"]
