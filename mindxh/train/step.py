"""Train-step cells: forward + backward + AdamW in one compiled graph.

`TrainStep` is the whole optimizer step when there is no gradient accumulation. With
accumulation, `AccumulateStep` runs once per micro-batch (adding grads / k into buffers) and
`ApplyStep` runs the optimizer on the buffers and clears them. In graph mode each cell
compiles once; in PyNative mode the same cells run op by op (the debug path).
"""
from __future__ import annotations

from mindspore import nn, ops

from mindxh.train.optim import AdamW


class _DataParallelMean(nn.Cell):
    """Mean of the loss and the gradients over data-parallel ranks: every rank logs the global loss."""

    def __init__(self, optimizer: AdamW, degree: int):
        super().__init__()
        self.grad_mean = nn.DistributedGradReducer(optimizer.params, mean=True, degree=degree)
        self.all_reduce = ops.AllReduce()  # sum over the world group
        self.inv_degree = 1.0 / degree

    def construct(self, loss, grads):
        return self.all_reduce(loss) * self.inv_degree, self.grad_mean(grads)


def _data_parallel_mean(optimizer: AdamW, degree: int):
    return None if degree == 1 else _DataParallelMean(optimizer, degree)


class TrainStep(nn.Cell):
    """(*batch) -> (loss, grad_norm, lr, ok); `batch` is whatever the loss cell takes."""

    def __init__(self, loss_cell: nn.Cell, optimizer: AdamW, data_parallel: int = 1):
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell
        self.optimizer = optimizer
        self.grad_fn = ops.value_and_grad(loss_cell, None, optimizer.params)
        self.dp_mean = _data_parallel_mean(optimizer, data_parallel)

    def construct(self, *batch):
        loss, grads = self.grad_fn(*batch)
        if self.dp_mean is not None:
            loss, grads = self.dp_mean(loss, grads)
        grad_norm, lr, ok = self.optimizer(grads, loss)
        return loss, grad_norm, lr, ok


class AccumulateStep(nn.Cell):
    """(*batch) -> loss; adds grads / accum into `buffers`."""

    def __init__(self, loss_cell: nn.Cell, optimizer: AdamW, accum: int, data_parallel: int = 1):
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell
        self.grad_fn = ops.value_and_grad(loss_cell, None, optimizer.params)
        self.dp_mean = _data_parallel_mean(optimizer, data_parallel)
        self.buffers = optimizer.params.clone(prefix="grad_accum", init="zeros")
        self.inv_accum = 1.0 / accum

    def construct(self, *batch):
        loss, grads = self.grad_fn(*batch)
        if self.dp_mean is not None:
            loss, grads = self.dp_mean(loss, grads)
        for buf, g in zip(self.buffers, grads):
            ops.assign_add(buf, g * self.inv_accum)
        return loss


class ApplyStep(nn.Cell):
    """(mean_loss) -> (grad_norm, lr, ok): optimizer on the accumulated grads, then zero them."""

    def __init__(self, accumulate: AccumulateStep, optimizer: AdamW):
        super().__init__(auto_prefix=False)
        self.buffers = accumulate.buffers
        self.optimizer = optimizer

    def construct(self, loss):
        grad_norm, lr, ok = self.optimizer(self.buffers, loss)
        for buf in self.buffers:
            ops.assign(buf, ops.zeros_like(buf))
        return grad_norm, lr, ok
