"""The precision policy: float16 matmuls, float32 master weights, loss scaling.

End to end through the CLI, on the tiny recipe shrunk to batch 8 x 64 tokens (CPU float16
kernels give no speed-up, ~3x slower than float32 here, so the runs are kept short):
float16 + dynamic loss scaling trains like float32 from the same seed, a forced overflow is
skipped and counted rather than fatal, and a killed float16 run resumes bitwise. The policy's
parts (wrapping, the scaler's rule, the guard, the MFU dtype) are checked in process.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import TINY, run_cli
from safetensors.numpy import load_file

from mindxh.checkpoint.store import FAULT_ENV

FP16 = ("--set", "precision.compute_dtype=float16", "--set", "precision.loss_scale=dynamic")
# 2**28: far above what float16 gradients take here (~2**19), so the first steps overflow;
# a window of 5 makes the scale grow (and overflow) again within the run. No held-out loss.
FORCED = (*FP16, "--set", f"precision.loss_scale_value={2.0 ** 28}",
          "--set", "precision.loss_scale_window=5", "--set", "data.heldout_batches=0")
# Relative tolerance float16 vs float32 after 30 steps. Float16 rounds each product operand
# to 11 significant bits (2**-11 ~ 5e-4 relative) and the difference compounds over the
# steps; measured here: 0.005% (final loss 2.2241 vs 2.2242) and 0.003% (held-out 2.30303 vs
# 2.30309). 5% leaves room for other CPUs' kernels and longer chaotic divergence while still
# meaning "trains as well": a broken policy (gradients underflowed to zero, updates skipped)
# is off by 50% or more at this point of the loss curve; the gradient norms catch the rest.
REL_TOL = 0.05


def _train(out, tokenizer, *extra, env=None):
    return run_cli("train", str(TINY), "--output-dir", str(out), "--no-progress",
                   "--max-steps", "30", "--set", "train.batch_size=8", "--set", "train.seq_len=64",
                   "--set", "train.log_every=1", "--set", "train.checkpoint_every=10",
                   "--set", "train.keep_last=5", "--set", "data.heldout_batches=1",
                   "--set", "optim.warmup_steps=10",
                   "--set", f"tokenizer.path={tokenizer}", *extra, env=env)


def _metrics(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tokenizer):
    """fp32, fp16 (default scale) and fp16 with a forced overflow, 30 steps each."""
    out = {}
    for name, extra in (("fp32", ()), ("fp16", FP16), ("forced", FORCED)):
        out[name] = tmp_path_factory.mktemp(name)
        res = _train(out[name], tiny_tokenizer, *extra)
        assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_float16_with_dynamic_loss_scaling_trains_like_float32(runs):
    fp32, fp16 = _metrics(runs["fp32"])[-1], _metrics(runs["fp16"])[-1]
    assert fp32["step"] == fp16["step"] == 30
    assert fp32["loss"] < 0.5 * math.log(512)  # it learned (uniform guess: ln 512 = 6.24)
    assert fp16["loss"] == pytest.approx(fp32["loss"], rel=REL_TOL)
    assert fp16["eval_loss"] == pytest.approx(fp32["eval_loss"], rel=REL_TOL)
    assert fp16["loss"] != fp32["loss"]  # the matmuls really ran in float16
    # Adam hardly sees a constant gradient factor, so a missed unscale would not show in the
    # loss: the (unscaled, pre-clipping) gradient norms must agree too, at every step
    for a, b in zip(_metrics(runs["fp32"]), _metrics(runs["fp16"])):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=REL_TOL), a["step"]
    assert fp16["skipped_steps"] == 0 and fp16["loss_scale"] == 65536.0
    assert "loss_scale" not in fp32 and "skipped_steps" not in fp32  # float32 records as before


def test_a_forced_overflow_is_skipped_counted_and_training_goes_on(runs):
    recs = _metrics(runs["forced"])
    first = recs[0]
    assert first["grad_norm"] is None and first["skipped_steps"] == 1  # skipped, not fatal
    assert first["loss_scale"] == 2.0 ** 27 and first["lr"] == recs[1]["lr"]  # schedule waits
    scales = [r["loss_scale"] for r in recs]
    assert min(scales) <= 2.0 ** 20 and all(math.log2(s).is_integer() for s in scales)
    assert any(b > a for a, b in zip(scales, scales[1:]))  # grew again after clean windows
    skipped = recs[-1]["skipped_steps"]
    assert 8 <= skipped <= 15  # ~9 halvings from 2**28, then an overflow per failed growth
    # it converges: after its 30 - skipped updates it is about where float32 was after as many
    # (measured: 2.78 after 18 updates vs float32's 2.85 at step 18; its lr schedule, which
    # counts applied updates only, is less far down the cosine)
    applied = 30 - skipped
    fp32 = {r["step"]: r["loss"] for r in _metrics(runs["fp32"])}
    assert recs[-1]["loss"] < 0.6 * recs[0]["loss"]
    assert recs[-1]["loss"] < 1.1 * fp32[applied]


def test_a_killed_float16_run_resumes_bitwise_with_its_loss_scale(runs, tiny_tokenizer, tmp_path):
    out = tmp_path / "killed"
    every5 = (*FORCED, "--set", "train.checkpoint_every=5")
    res = _train(out, tiny_tokenizer, *every5, env={FAULT_ENV: "10"})
    assert res.returncode == -9, res.stderr[-2000:]  # killed while writing step 10
    saved = load_file(str(out / "checkpoints/step-00000005/optimizer.safetensors"))
    assert saved["loss_scaler.scale"][0] < 2.0 ** 28  # the checkpoint holds a changed scale
    assert saved["loss_scaler.skipped"][0] > 0
    res = _train(out, tiny_tokenizer, *every5, "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "step-00000005" in res.stderr
    straight = runs["forced"]
    for name in ("model", "optimizer"):
        a = load_file(str(straight / f"checkpoints/step-00000030/{name}.safetensors"))
        b = load_file(str(out / f"checkpoints/step-00000030/{name}.safetensors"))
        assert a.keys() == b.keys()
        assert all(np.array_equal(a[k], b[k]) for k in a), name
    keys = ("step", "loss", "grad_norm", "lr", "loss_scale", "skipped_steps")
    assert ([[r.get(k) for k in keys] for r in _metrics(straight)]
            == [[r.get(k) for k in keys] for r in _metrics(out)])


# -- the parts, in process ----------------------------------------------------------------
@pytest.fixture
def pynative():
    """PyNative for these in-process checks, the device set first (as RunDir.open does):
    once a kernel has run, a later test's set_device would be refused."""
    import mindspore as ms

    ms.set_device("CPU")
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)


def _tiny(compute_dtype="float32", layers=2):
    from mindxh.config.schema import ModelConfig
    from mindxh.models.llama.model import Decoder
    from mindxh.train.precision import apply_compute_dtype

    cfg = ModelConfig(vocab_size=40, hidden_size=32, num_layers=layers, num_heads=4, num_kv_heads=2,
                      intermediate_size=64, max_seq_len=16)
    model = Decoder(cfg, 0)
    return model, apply_compute_dtype(model, compute_dtype)


def test_float16_wraps_every_matmul_and_keeps_parameters_float32(pynative):
    import mindspore as ms

    tokens = ms.Tensor(np.arange(16, dtype=np.int32).reshape(2, 8))
    ref, wrapped32 = _tiny("float32")
    model, wrapped = _tiny("float16")
    assert wrapped32 == 0
    assert wrapped == 2 * 9 + 1  # per layer q, k, v, o, q.k, probs.v, gate, up, down; tied head
    assert all(p.dtype == ms.float32 for p in model.get_parameters())
    assert [n for n, _ in model.parameters_and_names()] == [n for n, _ in ref.parameters_and_names()]
    a, b = ref(tokens), model(tokens)
    assert b.dtype == ms.float32
    assert np.allclose(a.asnumpy(), b.asnumpy(), rtol=0, atol=2e-3)
    assert not np.array_equal(a.asnumpy(), b.asnumpy())


def _scaler(kind, value=8.0, window=2):
    from mindxh.config.scale import PrecisionConfig
    from mindxh.train.precision import LossScaler

    return LossScaler(PrecisionConfig(compute_dtype="float16", loss_scale=kind, loss_scale_value=value,
                                      loss_scale_window=window))


def _state(scaler):
    return (float(scaler.scale.asnumpy()[0]), int(scaler.clean_steps.asnumpy()[0]),
            int(scaler.skipped.asnumpy()[0]))


def test_the_dynamic_scale_halves_on_overflow_and_doubles_after_a_clean_window(pynative):
    import mindspore as ms

    s = _scaler("dynamic", value=2.0)
    seen = []
    for ok in (True, False, True, True, False, False, False):
        s(ms.Tensor(ok))
        seen.append(_state(s))
    assert seen == [(2.0, 1, 0), (1.0, 0, 1), (1.0, 1, 1), (2.0, 0, 1), (1.0, 0, 2),
                    (1.0, 0, 3), (1.0, 0, 4)]  # floor at 1: the guard then stops the run
    grads = s.unscale((ms.Tensor(np.array([3.0, -5.0], np.float32)),))
    assert np.array_equal(grads[0].asnumpy(), np.array([3.0, -5.0], np.float32))


def test_a_static_scale_only_counts_overflows(pynative):
    import mindspore as ms

    s = _scaler("static", value=1024.0)
    for ok in (True, False, True, True, True):
        s(ms.Tensor(ok))
    assert _state(s) == (1024.0, 0, 1)


def test_the_loss_scale_is_optimizer_state_only_when_scaling(pynative):
    from mindxh.config.schema import OptimConfig
    from mindxh.train.optim import AdamW

    model, _ = _tiny()
    plain = AdamW(model.trainable_params(), OptimConfig(), 10)
    scaled = AdamW(model.trainable_params(), OptimConfig(), 10, _scaler("dynamic"))
    names = {n for n, _ in scaled.state_parameters()} - {n for n, _ in plain.state_parameters()}
    assert names == {"loss_scaler.scale", "loss_scaler.clean_steps", "loss_scaler.skipped"}


def test_the_guard_skips_overflows_but_stops_what_scaling_cannot_fix(pynative):
    from mindxh.train.precision import StepGuard
    from mindxh.train.run import TrainingError

    plain = StepGuard(None)
    assert plain.metrics() == {}
    with pytest.raises(TrainingError, match="non-finite loss"):
        plain.check(False, 1.0, float("inf"), 3, "")  # float32: as fatal as before

    guard = StepGuard(_scaler("dynamic", value=4.0))
    guard.check(False, 2.5, float("inf"), 1, "")  # an overflow at scale 4: skipped
    assert guard.metrics() == {"loss_scale": 4.0, "skipped_steps": 0}  # (the graph counts)
    with pytest.raises(TrainingError, match="forward pass overflowed"):
        guard.check(False, float("nan"), float("nan"), 2, "")
    guard.scale = 1.0
    with pytest.raises(TrainingError, match="even at loss scale 1"):
        guard.check(False, 2.5, float("inf"), 3, "")


def test_the_mfu_peak_follows_the_compute_dtype_unless_metrics_dtype_is_set():
    from mindxh.config import load_recipe

    assert load_recipe(TINY).metrics.dtype is None
    for overrides, expected in (([], "float32"),
                                (["precision.compute_dtype=float16", "precision.loss_scale=dynamic"],
                                 "float16"),
                                (["precision.compute_dtype=float16", "precision.loss_scale=static",
                                  "metrics.dtype=float32"], "float32")):
        recipe = load_recipe(TINY, overrides)
        assert recipe.metrics.peak_dtype(recipe.precision) == expected


def test_accumulated_float16_gradients_are_unscaled_and_overflows_skip_the_whole_step(pynative):
    """grad_accum: each micro-batch's gradients are unscaled before they are added (the buffers
    hold float32-like gradients), and an overflow in any micro-batch skips the whole update
    and clears the buffers."""
    import mindspore as ms
    from mindspore import ops

    from mindxh.config.schema import OptimConfig
    from mindxh.models.llama.model import LossCell
    from mindxh.train.optim import AdamW
    from mindxh.train.step import AccumulateStep, ApplyStep

    tokens = np.random.default_rng(0).integers(0, 40, (4, 9)).astype(np.int32)
    inputs, targets = ms.Tensor(tokens[:, :-1]), ms.Tensor(tokens[:, 1:])
    ref, _ = _tiny("float32", layers=1)  # one layer: PyNative runs AdamW op by op
    _, want = ops.value_and_grad(LossCell(ref), None, ref.trainable_params())(inputs, targets)
    cfg = OptimConfig(warmup_steps=0)
    for scale, ok in ((1024.0, True), (2.0 ** 40, False)):
        model, _ = _tiny("float16", layers=1)
        before = [p.asnumpy().copy() for p in model.trainable_params()]
        opt = AdamW(model.trainable_params(), cfg, 10, _scaler("dynamic", value=scale, window=100))
        acc = AccumulateStep(LossCell(model), opt, 2)
        tokens = ms.Tensor(float(targets.size), ms.float32)  # the step's loss tokens (TokenWeighted)
        acc(inputs[:2], targets[:2], tokens), acc(inputs[2:], targets[2:], tokens)
        if ok:
            for buf, g in zip(acc.buffers, want):
                err = np.abs(buf.asnumpy() - g.asnumpy()).max()
                assert err <= 1e-2 * np.abs(g.asnumpy()).max(), buf.name
        norm, _, applied = ApplyStep(acc, opt)(ms.Tensor(3.0, ms.float32))
        assert bool(applied.asnumpy()) == ok and np.isfinite(norm.asnumpy()) == ok
        assert _state(opt.loss_scaler) == (scale if ok else scale / 2, int(ok), int(not ok))
        assert int(opt.step.asnumpy()[0]) == int(ok)
        unchanged = all(np.array_equal(a, p.asnumpy()) for a, p in zip(before, model.trainable_params()))
        assert unchanged != ok
        assert all(not b.asnumpy().any() for b in acc.buffers)
