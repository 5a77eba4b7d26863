"""AdamW cell against a NumPy reference: schedule, bias correction, decay, clipping, NaN guard."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mindxh.config.schema import OptimConfig
from mindxh.train.optim import lr_at


@pytest.fixture(scope="module")
def ms():
    import mindspore

    mindspore.set_device("CPU")
    mindspore.set_context(mode=mindspore.PYNATIVE_MODE)
    return mindspore


def reference(params, grads_per_step, cfg: OptimConfig, max_steps: int):
    """Textbook AdamW (Loshchilov & Hutter) with global-norm clipping, in float64."""
    p = [x.astype(np.float64) for x in params]
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for t, grads in enumerate(grads_per_step):
        norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
        scale = min(1.0, cfg.grad_clip / (norm + 1e-6)) if cfg.grad_clip > 0 else 1.0
        lr = lr_at(t, cfg, max_steps)
        for i, g in enumerate(grads):
            g = g * scale
            m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g
            v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g * g
            update = (m[i] / (1 - cfg.beta1 ** (t + 1))) / (np.sqrt(v[i] / (1 - cfg.beta2 ** (t + 1))) + cfg.eps)
            if p[i].ndim >= 2:
                update = update + cfg.weight_decay * p[i]
            p[i] = p[i] - lr * update
    return p


def test_adamw_matches_reference(ms):
    from mindxh.train.optim import AdamW

    rng = np.random.default_rng(0)
    init = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    params = [ms.Parameter(ms.Tensor(x.copy()), name=f"p{i}") for i, x in enumerate(init)]
    cfg = OptimConfig(lr=0.1, warmup_steps=2, weight_decay=0.5, grad_clip=1.0, min_lr_ratio=0.2)
    opt = AdamW(params, cfg, max_steps=6)
    grads_per_step = [[rng.normal(scale=s, size=x.shape).astype(np.float32) for x in init]
                      for s in (0.1, 3.0, 0.5, 2.0, 0.01, 1.0)]  # some steps clip, some do not
    for t, grads in enumerate(grads_per_step):
        norm, lr, ok = opt(tuple(ms.Tensor(g) for g in grads), ms.Tensor(1.0, ms.float32))
        assert bool(ok.asnumpy())
        assert float(lr.asnumpy()) == pytest.approx(lr_at(t, cfg, 6), rel=1e-6)
        assert float(norm.asnumpy()) == pytest.approx(
            math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads)), rel=1e-5)
    expected = reference(init, grads_per_step, cfg, 6)
    for param, ref in zip(params, expected):
        np.testing.assert_allclose(param.asnumpy(), ref, rtol=2e-5, atol=2e-6)
    assert opt.step.asnumpy().item() == 6


def test_non_finite_gradient_changes_nothing(ms):
    from mindxh.train.optim import AdamW

    param = ms.Parameter(ms.Tensor(np.ones((2, 2), np.float32)), name="w")
    opt = AdamW([param], OptimConfig(warmup_steps=0), max_steps=10)
    bad = ms.Tensor(np.array([[1.0, np.nan], [0.0, 1.0]], np.float32))
    _, _, ok = opt((bad,), ms.Tensor(1.0, ms.float32))
    assert not bool(ok.asnumpy())
    np.testing.assert_array_equal(param.asnumpy(), np.ones((2, 2), np.float32))
    assert not opt.exp_avg[0].asnumpy().any() and opt.step.asnumpy().item() == 0
    _, _, ok = opt((ms.Tensor(np.ones((2, 2), np.float32)),), ms.Tensor(float("inf"), ms.float32))
    assert not bool(ok.asnumpy()) and opt.step.asnumpy().item() == 0  # a non-finite loss as well


def test_schedule_shape():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg, 100) == pytest.approx(0.1)
    assert lr_at(9, cfg, 100) == pytest.approx(1.0)
    assert lr_at(10, cfg, 100) == pytest.approx(1.0)
    assert lr_at(55, cfg, 100) == pytest.approx(0.55)
    assert lr_at(100, cfg, 100) == pytest.approx(0.1)
    values = [lr_at(s, cfg, 100) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))
