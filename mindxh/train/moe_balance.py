"""Around the optimizer step of a mixture-of-experts model: the experts' bias balancing and
the routing metrics. Training logic, applied to the model's MoE cells (models/llama/moe.py)
from outside, as data parallelism is: the model only records what its forward routed."""
from __future__ import annotations

import numpy as np
from mindspore import ParameterTuple, nn, ops

from mindxh.models.llama.moe import MoE, moe_layers

__all__ = ["ExpertBalance", "MoEMonitor", "moe_metrics", "monitor"]


class ExpertBalance(nn.Cell):
    """DeepSeek-V3's auxiliary-loss-free update (Wang et al. 2024), once per optimizer step:
    bias_i += rate * sign(mean_j load_j - load_i), from the choices per expert the step's
    training forward recorded (with grad_accum > 1: its last micro-batch's). Under data
    parallel the counts are summed over ranks first, so every rank applies the same nudge and
    the biases stay identical. A compiled cell: the update stays on the device."""

    def __init__(self, layers: list[MoE], rate: float, data_parallel: int = 1):
        super().__init__(auto_prefix=False)
        self.biases = ParameterTuple([m.expert_bias for m in layers])
        self.counts = ParameterTuple([m.routed for m in layers])
        self.rate = rate
        self.all_reduce = ops.AllReduce() if data_parallel > 1 else None

    def construct(self):
        done = ()
        for bias, counts in zip(self.biases, self.counts):
            load = counts if self.all_reduce is None else self.all_reduce(counts)
            done = done + (ops.assign_add(bias, self.rate * ops.sign(load.mean() - load)),)
        return done


def moe_metrics(model) -> dict:
    """The last training forward's routing, for metrics.jsonl: per MoE layer the share of
    choices each expert got (`moe_load`), the share dropped over capacity, the balance loss
    added to the loss (`moe_aux_loss`, 0 unless balance is aux_loss), the mean balance
    statistic (`moe_balance`, 1.0 = uniform) and the worst max/min load ratio over layers
    (min clamped to one choice, so a starved expert gives a finite number)."""
    layers = moe_layers(model)
    loads, ratios, dropped, total, stats, aux = [], [], 0.0, 0.0, [], 0.0
    for m in layers:
        counts = m.routed.asnumpy().astype(np.float64)
        n = max(counts.sum(), 1.0)
        loads.append([round(float(c / n), 5) for c in counts])
        ratios.append(float(counts.max() / max(counts.min(), 1.0)))
        dropped += float(m.dropped.asnumpy()[0])
        total += n
        stats.append(float(m.balance.asnumpy()[0]))
        aux += m.aux_coef * stats[-1]
    return {"moe_load": loads, "moe_dropped_frac": dropped / max(total, 1.0),
            "moe_aux_loss": aux, "moe_balance": float(np.mean(stats)) if stats else 0.0,
            "moe_load_max_min": max(ratios) if ratios else 1.0}


class MoEMonitor:
    """What a trainer does for a mixture-of-experts model around its optimizer step: the bias
    update (`after_step`, only for an applied step) and the routing metrics."""

    def __init__(self, model, data_parallel: int = 1):
        self.model = model
        m = model.cfg.moe
        use_bias = m.balance == "bias" and m.bias_update_rate > 0
        self.balance = ExpertBalance(moe_layers(model), m.bias_update_rate,
                                     data_parallel) if use_bias else None

    def after_step(self) -> None:
        if self.balance is not None:
            self.balance()

    def metrics(self) -> dict:
        return moe_metrics(self.model)


def monitor(model, data_parallel: int = 1) -> MoEMonitor | None:
    """A `MoEMonitor` for a model with MoE layers, None for a dense one."""
    return MoEMonitor(model, data_parallel) if moe_layers(model) else None
