"""Train-step cells: forward + backward + AdamW in one compiled graph.

`TrainStep` is the whole optimizer step when there is no gradient accumulation. With
accumulation, `AccumulateStep` runs once per micro-batch (adding grads / k into buffers) and
`ApplyStep` runs the optimizer on the buffers and clears them. In graph mode each cell
compiles once; in PyNative mode the same cells run op by op (the debug path).
With loss scaling (the optimizer holds a `precision.LossScaler`) the cells differentiate
`loss * scale` and unscale the gradients in float32 before anything else sees them (data-
parallel mean, accumulation buffers, clipping), so the rest of the step is unchanged; without
it they build exactly the graph they always did.
With pipeline parallel (a `parallel.pipeline.Microbatching`) the cells differentiate the loss
cell wrapped in MindSpore's pipeline cell (the batch cut into micro-batches, their losses
summed) and take the gradients from its reducer (the mean over micro-batches of what the
compiler accumulated), before unscaling; the loss they report is the micro-batch mean.
Without it, again, nothing in the graph changes.
With several ranks or micro-batches per optimizer step, each one's loss is re-weighted by its
share of the step's loss tokens (`TokenWeighted`), so the step takes the mean over every loss
token, as one process with the whole batch would; the cells then take one more input, the
step's loss tokens on this rank. With one rank and one micro-batch the graph is unchanged.
Under semi-auto parallel (Ascend), where the ranks feed slices of one logical batch, the
trainer turns it off (`token_weighted=False`): micro-batch means are averaged as before.
"""
from __future__ import annotations

from mindspore import nn, ops

from mindxh.parallel.pipeline import Microbatching
from mindxh.train.optim import AdamW
from mindxh.train.precision import ScaledLoss


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


def _pipelined(loss_cell: nn.Cell, optimizer: AdamW, micro: Microbatching | None):
    """(loss network, gradient reducer or None, 1 / micro-batches). The reducer is an
    attribute of the step cells themselves (auto_prefix=False), so its buffers are named
    `accu_grads.<parameter>`, the names MindSpore's pipeline pass accumulates into."""
    if micro is None:
        return loss_cell, None, 1.0
    return micro.wrap(loss_cell), micro.grad_reducer(optimizer.params), 1.0 / micro.micro_batches


def _grad_fn(loss_cell: nn.Cell, optimizer: AdamW):
    """(*batch) -> (loss, grads), or ((loss * scale, loss), scaled grads) with loss scaling."""
    if optimizer.loss_scaler is None:
        return ops.value_and_grad(loss_cell, None, optimizer.params)
    return ops.value_and_grad(ScaledLoss(loss_cell, optimizer.loss_scaler), None, optimizer.params,
                              has_aux=True)


class TokenWeighted(nn.Cell):
    """(*batch, step_tokens) -> the loss cell's sum over this micro-batch's loss tokens times
    parts / N: N the optimizer step's loss tokens over every rank and micro-batch, parts =
    ranks x micro-batches. The step averages over the parts, so it takes the mean over all N
    tokens, and a part without loss tokens adds 0 (its mean would be 0/0). Unweighted, a rank
    or micro-batch with few loss tokens (SFT rows whose prompts are masked) counted as much
    as one with many, and 2 ranks x 8 rows did not train like 1 x 16. A mixture-of-experts
    balance loss is added unweighted: routing covers every token, prompts included."""

    def __init__(self, loss_cell: nn.Cell, parts: int):
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell
        self.parts = float(parts)

    def construct(self, *batch_and_tokens):
        batch, step_tokens = batch_and_tokens[:-1], batch_and_tokens[-1]
        weight = ops.stop_gradient(self.parts / ops.maximum(step_tokens, 1.0))
        return self.loss_cell(*batch, token_weight=weight)


class _Gradients(nn.Cell):
    """What both step cells do first: the loss and its gradients at scale 1, reduced over
    pipeline micro-batches and data-parallel ranks (token-weighted when there are several
    ranks or micro-batches: `weighted`, and the batch ends with the step's loss tokens)."""

    def __init__(self, loss_cell: nn.Cell, optimizer: AdamW, data_parallel: int,
                 microbatching: Microbatching | None, accum: int = 1, token_weighted: bool = True):
        super().__init__(auto_prefix=False)
        self.weighted = token_weighted and microbatching is None and data_parallel * accum > 1
        if self.weighted:
            loss_cell = TokenWeighted(loss_cell, data_parallel * accum)
        self.tokens_sum = ops.AllReduce() if self.weighted and data_parallel > 1 else None
        self.loss_cell, self.pp_reduce, self.inv_micro = _pipelined(loss_cell, optimizer,
                                                                    microbatching)
        self.scaler = optimizer.loss_scaler
        self.grad_fn = _grad_fn(self.loss_cell, optimizer)
        self.dp_mean = _data_parallel_mean(optimizer, data_parallel)

    def loss_and_grads(self, *batch):
        if self.tokens_sum is not None:  # this rank's loss tokens of the step -> every rank's
            batch = batch[:-1] + (self.tokens_sum(batch[-1]),)
        if self.scaler is None:
            loss, grads = self.grad_fn(*batch)
        else:  # the true loss; gradients of loss * scale, brought back to scale 1 below
            (_, loss), grads = self.grad_fn(*batch)
        if self.pp_reduce is not None:  # before unscaling: the reducer returns its own buffers
            loss, grads = loss * self.inv_micro, self.pp_reduce(grads)
        if self.scaler is not None:
            grads = self.scaler.unscale(grads)
        if self.dp_mean is not None:
            loss, grads = self.dp_mean(loss, grads)
        return loss, grads


class TrainStep(_Gradients):
    """(*batch) -> (loss, grad_norm, lr, ok); `batch` is whatever the loss cell takes."""

    def __init__(self, loss_cell: nn.Cell, optimizer: AdamW, data_parallel: int = 1,
                 microbatching: Microbatching | None = None, token_weighted: bool = True):
        super().__init__(loss_cell, optimizer, data_parallel, microbatching, 1, token_weighted)
        self.optimizer = optimizer

    def construct(self, *batch):
        loss, grads = self.loss_and_grads(*batch)
        grad_norm, lr, ok = self.optimizer(grads, loss)
        return loss, grad_norm, lr, ok


class AccumulateStep(_Gradients):
    """(*batch) -> loss; adds grads / accum into `buffers`."""

    def __init__(self, loss_cell: nn.Cell, optimizer: AdamW, accum: int, data_parallel: int = 1,
                 microbatching: Microbatching | None = None, token_weighted: bool = True):
        super().__init__(loss_cell, optimizer, data_parallel, microbatching, accum, token_weighted)
        self.buffers = optimizer.params.clone(prefix="grad_accum", init="zeros")
        self.inv_accum = 1.0 / accum

    def construct(self, *batch):
        loss, grads = self.loss_and_grads(*batch)
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
