"""The GRPO objective as compiled cells.

Per response token t of sample i (Shao et al. 2024, DeepSeekMath section 4.1):

    ratio  = exp(logp - logp_old)
    pg     = -min(ratio * A_i, clip(ratio, 1 - eps, 1 + eps) * A_i)
    kl     = exp(logp_ref - logp) - (logp_ref - logp) - 1        (k3, Schulman 2020)
    loss   = sum_t mask * (pg + beta * kl) / sum_t mask          (token-level mean, as DAPO)

The cells take `weights` = mask / sum_t mask over the whole sampled batch (rollout.py), so
the loss of any rows is a plain weighted sum and a batch cut into micro-batches
(`GRPOAccumulate`) adds up to the same loss and gradient as the batch in one piece.

The token-level mean weighs every generated token equally, so long responses are not
down-weighted per token (the sample-level mean of the original GRPO is biased towards
short answers, Yu et al. 2025). With one optimisation pass per batch the ratio is 1 and
the loss is REINFORCE with the group mean as baseline; clipping matters from two passes on.
That pass needs no separate forward pass for the old log-probs: they are the current ones,
held constant (`old_logp` None), which gives the same ratio (1) and gradient.

Every log-probability here is of the distribution the responses were sampled from:
softmax(logits / grpo.temperature) over the whole vocabulary (top-p is refused by the
recipe check). At temperature 1 and without that, a run sampled at 0.7 would optimise
the untempered policy while drawing from the tempered one.
"""
from __future__ import annotations

from dataclasses import dataclass

import mindspore as ms
from mindspore import nn, ops

from mindxh.train.optim import AdamW

__all__ = ["GRPOAccumulate", "GRPOLoss", "GRPOStats", "GRPOStep", "TokenLogProbs"]


class TokenLogProbs(nn.Cell):
    """(input_ids [N, T], targets [N, T]) -> log p(target | prefix) [N, T] with
    p = softmax(logits / temperature), as `generate.sampling.sample` draws; targets < 0 read id 0."""

    def __init__(self, model: nn.Cell, temperature: float = 1.0):
        super().__init__(auto_prefix=False)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model = model
        self.temperature = float(temperature)

    def construct(self, input_ids, targets):
        logits = self.model(input_ids)
        if self.temperature != 1.0:  # a constant: the graph holds one branch
            logits = logits / self.temperature
        logp = ops.log_softmax(logits, -1)
        safe = ops.maximum(targets, 0).expand_dims(-1)
        return ops.gather_elements(logp, -1, safe).squeeze(-1)


class GRPOLoss(nn.Cell):
    """(input_ids, targets, weights, advantages, old_logp, ref_logp) -> (loss, kl,
    clip_fraction), each a `weights`-weighted sum over tokens; only `loss` carries gradients.
    `old_logp` None: the first pass over a batch, where the old policy is the current one.
    `ref_logp` None: no KL term (kl_beta 0), and the kl figure is 0."""

    def __init__(self, model: nn.Cell, clip_eps: float, kl_beta: float, temperature: float = 1.0):
        super().__init__(auto_prefix=False)
        self.logprobs = TokenLogProbs(model, temperature)
        self.low, self.high = 1.0 - clip_eps, 1.0 + clip_eps
        self.kl_beta = kl_beta

    def construct(self, input_ids, targets, weights, advantages, old_logp=None, ref_logp=None):
        logp = self.logprobs(input_ids, targets)
        if old_logp is None:  # a constant: the graph holds one branch
            old_logp = ops.stop_gradient(logp)
        ratio = ops.exp(logp - old_logp)
        adv = advantages.expand_dims(-1)
        pg = -ops.minimum(ratio * adv, ops.clip_by_value(ratio, self.low, self.high) * adv)
        if ref_logp is None:
            per_token, kl_mean = pg, ops.zeros((), ms.float32)
        else:
            delta = ref_logp - logp
            kl = ops.exp(delta) - delta - 1.0
            per_token = pg + self.kl_beta * kl
            kl_mean = ops.stop_gradient((kl * weights).sum())
        loss = (per_token * weights).sum()
        clipped = ops.logical_or(ratio < self.low, ratio > self.high).astype(ms.float32)
        clip_fraction = ops.stop_gradient((clipped * weights).sum())
        return loss, kl_mean, clip_fraction


class GRPOStep(nn.Cell):
    """One policy update on a whole batch: (batch...) -> (loss, kl, clip_fraction, grad_norm,
    lr, ok); read them by name with `GRPOStats.of`."""

    def __init__(self, loss_cell: GRPOLoss, optimizer: AdamW):
        super().__init__(auto_prefix=False)
        self.loss_cell = loss_cell
        self.optimizer = optimizer
        self.grad_fn = ops.value_and_grad(loss_cell, None, optimizer.params, has_aux=True)

    def construct(self, input_ids, targets, weights, advantages, old_logp=None, ref_logp=None):
        (loss, kl, clip_fraction), grads = self.grad_fn(input_ids, targets, weights, advantages,
                                                        old_logp, ref_logp)
        grad_norm, lr, ok = self.optimizer(grads, loss)
        return loss, kl, clip_fraction, grad_norm, lr, ok


class GRPOAccumulate(nn.Cell):
    """One micro-batch of an update: (batch...) -> (loss, kl, clip_fraction), its gradient
    added into `buffers`; `train.step.ApplyStep` then runs the optimizer on them. With the
    batch's token weights the micro-batches' figures and gradients add up to the batch's.

    Why: without fusion MindSpore's CPU kernels stream every element-wise op through memory,
    and a 128-row update of the tiny X1 model ran 15% slower per row than 32-row pieces, at
    3x their memory (6.2 vs 2.1 GB RSS; docs/performance.md)."""

    def __init__(self, loss_cell: GRPOLoss, optimizer: AdamW):
        super().__init__(auto_prefix=False)
        self.grad_fn = ops.value_and_grad(loss_cell, None, optimizer.params, has_aux=True)
        self.buffers = optimizer.params.clone(prefix="grad_accum", init="zeros")

    def construct(self, input_ids, targets, weights, advantages, old_logp=None, ref_logp=None):
        (loss, kl, clip_fraction), grads = self.grad_fn(input_ids, targets, weights, advantages,
                                                        old_logp, ref_logp)
        for buf, g in zip(self.buffers, grads):
            ops.assign_add(buf, g)
        return loss, kl, clip_fraction


@dataclass(frozen=True)
class GRPOStats:
    """`GRPOStep`'s outputs as host numbers, by name: a graph returns a tuple, readers need names."""

    loss: float
    kl: float
    clip_fraction: float
    grad_norm: float
    lr: float
    ok: bool  # False: loss or gradient not finite, and the optimizer skipped the update

    @classmethod
    def of(cls, outputs) -> GRPOStats:
        loss, kl, clip_fraction, grad_norm, lr, ok = (x.asnumpy().reshape(-1)[0] for x in outputs)
        return cls(float(loss), float(kl), float(clip_fraction), float(grad_norm), float(lr), bool(ok))

    @classmethod
    def of_parts(cls, sums: list[float], applied) -> GRPOStats:
        """The (loss, kl, clip_fraction) of a batch's micro-batches, summed on the host (each
        is its share of the batch's figure), and `ApplyStep`'s outputs (grad_norm, lr, ok)."""
        grad_norm, lr, ok = (x.asnumpy().reshape(-1)[0] for x in applied)
        return cls(*sums, float(grad_norm), float(lr), bool(ok))
