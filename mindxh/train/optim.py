"""AdamW with warmup + cosine schedule, global-norm clipping and a non-finite guard.

Written as one MindSpore cell so that the whole update compiles into the train-step graph
on CPU and Ascend alike (`mint.optim.AdamW` has Ascend kernels only). The update follows
Loshchilov & Hutter (2019): bias-corrected Adam moments, decoupled weight decay. Each
parameter is updated in place by one fused kernel (`ops.AdamWeightDecay`, CPU/GPU/Ascend),
with the bias correction folded into its scalars: one pass over p, m and v instead of a dozen
element-wise ops per parameter (measured in docs/performance.md).
If the loss or the gradient norm is not finite, no parameter or moment changes: the step
reports `ok = False` and the trainer stops before anything is saved, unless the recipe scales
the loss (precision.py): then a non-finite gradient is an overflow, skipped and counted by the
optional `loss_scaler`, which the optimizer owns so that its scale and counters are saved and
restored with the moments (a resume stays bitwise identical).
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from mindxh.config.schema import OptimConfig


def lr_at(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """The schedule in plain Python (for docs, tests and planning); `AdamW` computes the same."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
    low = cfg.lr * cfg.min_lr_ratio
    return low + 0.5 * (cfg.lr - low) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def decays(param: Parameter) -> bool:
    """Weight decay on matrices (projections, embeddings), not on norm gains or biases."""
    return len(param.shape) >= 2


class AdamW(nn.Cell):
    """construct(grads, loss) -> (grad_norm, lr, ok); `step` counts applied updates."""

    def __init__(self, params: list[Parameter], cfg: OptimConfig, max_steps: int,
                 loss_scaler: nn.Cell | None = None):
        super().__init__()
        self.params = ParameterTuple(params)
        self.exp_avg = self.params.clone(prefix="exp_avg", init="zeros")
        self.exp_avg_sq = self.params.clone(prefix="exp_avg_sq", init="zeros")
        # shape (1,), not (): graph-mode assignment turns a 0-d parameter into (1,) anyway
        self.step = Parameter(Tensor(np.zeros(1, np.int32)), name="step", requires_grad=False)
        self.decay_flags = tuple(decays(p) for p in params)
        self.decay_rates = tuple(cfg.weight_decay if d else 0.0 for d in self.decay_flags)
        self.adam = ops.AdamWeightDecay()  # in place: p, m, v
        self.cfg = cfg
        self.max_steps = max_steps
        self.pi = math.pi
        self.loss_scaler = loss_scaler  # precision.LossScaler: scale + counters, or None

    def state_parameters(self) -> list[tuple[str, Parameter]]:
        """(name, parameter) of everything a checkpoint must hold to resume: moments, step and
        the loss scaler's state (absent without loss scaling, so float32 checkpoints are as before)."""
        state = [(p.name, p) for p in self.get_parameters() if p.name.startswith(("exp_avg", "step"))]
        if self.loss_scaler is not None:
            state += [(p.name, p) for p in self.loss_scaler.get_parameters()]
        return state

    def schedule(self, step):
        cfg = self.cfg
        s = step.astype(ms.float32)
        warm = cfg.lr * (s + 1.0) / max(cfg.warmup_steps, 1)
        progress = ops.clip_by_value((s - cfg.warmup_steps) / max(1, self.max_steps - cfg.warmup_steps),
                                     0.0, 1.0)
        low = cfg.lr * cfg.min_lr_ratio
        cosine = low + 0.5 * (cfg.lr - low) * (1.0 + ops.cos(self.pi * progress))
        return ops.select(s < cfg.warmup_steps, warm, cosine)

    def construct(self, grads, loss):
        cfg = self.cfg
        sq = ()
        for g in grads:
            sq = sq + (ops.reduce_sum(g * g),)
        grad_norm = ops.sqrt(ops.addn(sq))
        ok = ops.logical_and(ops.isfinite(grad_norm), ops.isfinite(loss))
        scale = ops.ones_like(grad_norm)
        if cfg.grad_clip > 0:
            scale = ops.minimum(scale, cfg.grad_clip / (grad_norm + 1e-6))
        step = self.step[0]
        lr = self.schedule(step)
        t = (step + 1).astype(ms.float32)
        bias1 = 1.0 - ops.pow(cfg.beta1, t)
        root2 = ops.sqrt(1.0 - ops.pow(cfg.beta2, t))
        # The kernel does m += (g - m)(1 - b1), v += (g^2 - v)(1 - b2),
        # p -= lr_k * (m / (sqrt(v) + eps_k) + wd_k * p), with no bias correction. With
        # lr_k = lr * root2 / bias1, eps_k = eps * root2 and wd_k = wd * bias1 / root2 this is
        # p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p), m_hat = m / bias1, v_hat = v / root2^2.
        # A step that is not ok runs with lr 0, b1 = b2 = 1 and zero gradients: nothing changes.
        one = ops.ones_like(lr)
        lr_k = ops.select(ok, lr * root2 / bias1, ops.zeros_like(lr))
        beta1 = ops.select(ok, cfg.beta1 * one, one)
        beta2 = ops.select(ok, cfg.beta2 * one, one)
        eps_k = cfg.eps * root2
        decay_unit = bias1 / root2
        for p, m, v, g, wd in zip(self.params, self.exp_avg, self.exp_avg_sq, grads, self.decay_rates):
            g = ops.select(ok, g * scale, ops.zeros_like(g))
            self.adam(p, m, v, lr_k, beta1, beta2, eps_k, wd * decay_unit, g)
        ops.assign(self.step, self.step + ok.astype(ms.int32))
        if self.loss_scaler is not None:
            self.loss_scaler(ok)
        return grad_norm, lr, ok
