"""The recipe's `precision:` policy, applied to a built model and its train step.

Compute dtype. Parameters stay float32 (the master weights the optimizer updates); only the
matrix products run in `compute_dtype`. `apply_compute_dtype` replaces every MatMul and
BatchMatMul primitive, and `ops.matmul` function, a cell holds as an attribute (Linear,
attention's q.k and probs.v, the tied output head, MoE experts; not MoE routers) by
`CastMatMul`, which casts both operands to the compute dtype and the product back to
float32. Everything between the products (embedding lookup, RoPE, RMSNorm statistics,
softmax, residuals, the loss) therefore stays float32 without the model knowing about
precision, and the cast's gradient brings float32 gradients back to the master weights.
This is applied from outside so that a float32 recipe builds the same graph as before
(bitwise identical runs), and a new model with the same primitives gets the policy for free.
It must run before the model's first call (graph mode caches a compiled cell), and after a
parallel plan if any: the wrapper keeps the primitive, with the strategy attached to it.

Loss scaling (float16's 5 exponent bits underflow small gradients; Micikevicius et al. 2018).
`LossScaler` holds the scale and its counters in Parameters: the optimizer owns it, so they
are saved and restored with the moments and a resume stays bitwise identical. The step
cells differentiate `loss * scale` and divide the gradients by the scale in float32 (exact:
the scale is a power of the factor, 2 by default). A non-finite gradient is an overflow:
AdamW skips the update, the scaler counts it and, when dynamic, divides the scale by the
factor; after `loss_scale_window` clean steps in a row a dynamic scale grows by the factor.

`StepGuard` is the trainer's side: an overflow with loss scaling is not an error, while a
non-finite loss (a forward overflow, which no scale can fix), an overflow the scale can no
longer shrink for (scale 1: gradients overflow unscaled), or any non-finite step without
loss scaling stops the run as before.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore import dtype as mstype

from mindxh.config.scale import PrecisionConfig
from mindxh.train.run import TrainingError, check_finite

log = logging.getLogger(__name__)

__all__ = ["KEEP_FLOAT32", "CastMatMul", "LossScaler", "ScaledLoss", "StepGuard", "apply_compute_dtype",
           "loss_scaler"]

_DTYPES = {"float16": mstype.float16, "bfloat16": mstype.bfloat16}
_MATMULS = (ops.MatMul, ops.BatchMatMul)
# cells (by attribute name, anywhere in the path) kept float32: an MoE router's top-k choice
# flips on rounding-level differences (Megatron keeps routers in float32 too)
KEEP_FLOAT32 = frozenset({"router"})


class CastMatMul(nn.Cell):
    """A matmul primitive run in a lower precision: operands cast down, product cast back to
    float32, so the ops around it keep float32 whatever the compute dtype."""

    def __init__(self, matmul, dtype):
        super().__init__()
        self.matmul = matmul
        self.dtype = dtype

    def construct(self, a, b):
        return ops.cast(self.matmul(ops.cast(a, self.dtype), ops.cast(b, self.dtype)), mstype.float32)


def apply_compute_dtype(model: nn.Cell, compute_dtype: str) -> int:
    """Run every matmul a cell of `model` holds (MatMul/BatchMatMul primitive, `ops.matmul`) in
    `compute_dtype`; returns how many were wrapped (0 for float32: the model is left untouched)."""
    if compute_dtype == "float32":
        return 0
    dtype = _DTYPES[compute_dtype]
    wrapped = 0
    for path, cell in list(model.cells_and_names()):
        if isinstance(cell, CastMatMul) or KEEP_FLOAT32.intersection(path.split(".")):
            continue
        for name, value in list(vars(cell).items()):
            if isinstance(value, _MATMULS) or value is ops.matmul:
                setattr(cell, name, CastMatMul(value, dtype))
                wrapped += 1
    log.info("precision: %d matmuls in %s, parameters, norms, softmax and loss in float32",
             wrapped, compute_dtype)
    return wrapped


class LossScaler(nn.Cell):
    """Static or dynamic loss scale; its Parameters are optimizer state (see AdamW), saved as
    `loss_scaler.scale`, `loss_scaler.clean_steps` and `loss_scaler.skipped`."""

    def __init__(self, cfg: PrecisionConfig):
        super().__init__()
        self.dynamic = cfg.loss_scale == "dynamic"
        self.factor = float(cfg.loss_scale_factor)
        self.window = int(cfg.loss_scale_window)
        # shape (1,), not (): graph-mode assignment turns a 0-d parameter into (1,) anyway
        self.scale = Parameter(Tensor(np.array([cfg.loss_scale_value], np.float32)),
                               name="scale", requires_grad=False)
        self.clean_steps = Parameter(Tensor(np.zeros(1, np.int32)), name="clean_steps",
                                     requires_grad=False)
        self.skipped = Parameter(Tensor(np.zeros(1, np.int32)), name="skipped",
                                 requires_grad=False)

    def unscale(self, grads):
        inv = 1.0 / self.scale[0]  # a power of 2 with the defaults: the products are exact
        return tuple(g * inv for g in grads)

    def construct(self, ok):
        """Update after a step whose gradients were finite (`ok`) or not; returns `ok`."""
        overflow = ops.logical_not(ok)
        ops.assign(self.skipped, self.skipped + overflow.astype(mstype.int32))
        if self.dynamic:
            clean = self.clean_steps + ok.astype(mstype.int32)
            grow = clean >= self.window
            scale = ops.select(grow, self.scale * self.factor, self.scale)
            scale = ops.select(overflow, ops.maximum(self.scale / self.factor, 1.0), scale)
            ops.assign(self.scale, scale)
            ops.assign(self.clean_steps, ops.select(ops.logical_or(grow, overflow),
                                                    ops.zeros_like(clean), clean))
        return ok


class ScaledLoss(nn.Cell):
    """(*batch) -> (loss * scale, loss): differentiated with has_aux, so the gradients are of the
    scaled loss while the reported loss is the true one."""

    def __init__(self, loss_cell: nn.Cell, scaler: LossScaler):
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell
        self.scaler = scaler

    def construct(self, *batch):
        loss = self.loss_cell(*batch)
        return loss * self.scaler.scale[0], loss


def loss_scaler(cfg: PrecisionConfig) -> LossScaler | None:
    return None if cfg.loss_scale == "none" else LossScaler(cfg)


class StepGuard:
    """Decides, after each step, whether a step that did not update is fatal; reports the
    scale and the skipped-step count for the metrics. Read the scaler after any restore."""

    def __init__(self, scaler: LossScaler | None):
        self.scaler = scaler
        self.scale = self._read_scale()

    def _read_scale(self) -> float:
        return 1.0 if self.scaler is None else float(self.scaler.scale.asnumpy()[0])

    def check(self, ok: bool, loss: float, grad_norm: float, step: int, hint: str) -> None:
        if self.scaler is None:
            check_finite(ok, loss, grad_norm, step, hint)
            return
        used, self.scale = self.scale, self._read_scale()
        if not math.isfinite(loss):
            raise TrainingError(f"non-finite loss ({loss}) at step {step}: the forward pass "
                                "overflowed, which loss scaling cannot fix; parameters were not "
                                "updated and no checkpoint was written. Lower optim.lr or use "
                                "precision.compute_dtype float32.")
        if ok:
            return
        if used <= 1.0:
            check_finite(ok, loss, grad_norm, step, "The gradients overflow even at loss scale 1. "
                         + hint)
        log.info("step %d: gradients overflowed at loss scale %g; update skipped, scale now %g",
                 step, used, self.scale)

    def metrics(self) -> dict:
        """{loss_scale, skipped_steps} with loss scaling, else {}."""
        if self.scaler is None:
            return {}
        return {"loss_scale": self.scale, "skipped_steps": int(self.scaler.skipped.asnumpy()[0])}
