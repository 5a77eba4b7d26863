"""The decoder: exact parameter count, causality, family options, graph == PyNative."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY, run_cli

from mindxh.config.schema import ModelConfig


def expected_count(c: ModelConfig) -> int:
    h, d, f, v, L = c.hidden_size, c.head_dim, c.intermediate_size, c.vocab_size, c.num_layers
    attn = h * c.num_heads * d * 2 + h * c.num_kv_heads * d * 2  # wq, wo, wk, wv
    if c.qkv_bias:
        attn += c.num_heads * d + 2 * c.num_kv_heads * d
    if c.qk_norm:
        attn += 2 * d
    block = attn + 3 * h * f + 2 * h
    head = 0 if c.tie_embeddings else v * h
    return v * h + L * block + h + head


VARIANTS = {
    "llama-gqa": dict(num_kv_heads=2),
    "mha-untied": dict(num_kv_heads=4, tie_embeddings=False),
    "qwen2-bias": dict(num_kv_heads=2, qkv_bias=True),
    "qwen3-qknorm": dict(num_kv_heads=1, qk_norm=True),
}


@pytest.fixture(scope="module")
def ms_pynative():
    import mindspore as ms

    ms.set_device("CPU")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return ms


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_count_is_exact(name, ms_pynative):
    from mindxh.models.accounting import count_parameters
    from mindxh.models.llama.model import Decoder

    cfg = ModelConfig(vocab_size=97, hidden_size=32, num_heads=4, intermediate_size=48,
                      num_layers=2, max_seq_len=16, **VARIANTS[name])
    counts = count_parameters(Decoder(cfg, seed=0))
    assert counts["total"] == expected_count(cfg)
    assert counts["embedding"] == 97 * 32
    assert counts["non_embedding"] == counts["total"] - 97 * 32


def test_parameter_names_are_stable(ms_pynative):
    """Checkpoints are keyed by these names: a restructuring of the cells must keep them."""
    from mindxh.models.llama.model import Decoder

    cfg = ModelConfig(vocab_size=61, hidden_size=32, num_heads=4, intermediate_size=48,
                      num_layers=2, max_seq_len=16, num_kv_heads=2, qkv_bias=True, qk_norm=True,
                      tie_embeddings=False)
    layer = ["attn_norm.weight", "attn.wq.weight", "attn.wq.bias", "attn.wk.weight", "attn.wk.bias",
             "attn.wv.weight", "attn.wv.bias", "attn.wo.weight", "attn.q_norm.weight",
             "attn.k_norm.weight", "mlp_norm.weight", "mlp.gate.weight", "mlp.up.weight",
             "mlp.down.weight"]
    expected = (["embed.weight"] + [f"layers.{i}.{n}" for i in range(2) for n in layer]
                + ["norm.weight", "lm_head.weight"])
    assert [p.name for p in Decoder(cfg, seed=0).get_parameters()] == expected


@pytest.mark.parametrize("name", VARIANTS)
def test_causal_and_deterministic(name, ms_pynative):
    from mindxh.models.llama.model import Decoder

    ms = ms_pynative
    cfg = ModelConfig(vocab_size=61, hidden_size=32, num_heads=4, intermediate_size=48,
                      num_layers=2, max_seq_len=16, **VARIANTS[name])
    model = Decoder(cfg, seed=3)
    tokens = np.random.default_rng(0).integers(0, 61, (2, 12)).astype(np.int32)
    logits = model(ms.Tensor(tokens)).asnumpy()
    assert logits.shape == (2, 12, 61) and np.isfinite(logits).all()
    changed = tokens.copy()
    changed[:, 8:] = (changed[:, 8:] + 1) % 61  # alter the future only
    logits2 = model(ms.Tensor(changed)).asnumpy()
    np.testing.assert_array_equal(logits[:, :8], logits2[:, :8])
    assert not np.allclose(logits[:, 8:], logits2[:, 8:])
    again = Decoder(cfg, seed=3)(ms.Tensor(tokens)).asnumpy()
    np.testing.assert_array_equal(logits, again)  # same seed, same weights, bitwise


def test_initial_loss_is_near_uniform(ms_pynative):
    from mindxh.models.llama.model import Decoder, LossCell

    ms = ms_pynative
    cfg = ModelConfig(vocab_size=200, hidden_size=32, num_heads=4, num_kv_heads=2,
                      intermediate_size=48, max_seq_len=32)
    tokens = ms.Tensor(np.random.default_rng(1).integers(0, 200, (4, 17)).astype(np.int32))
    loss = float(LossCell(Decoder(cfg, 0))(tokens[:, :-1], tokens[:, 1:]).asnumpy())
    assert abs(loss - np.log(200)) < 0.1


def test_loss_is_the_masked_mean_and_zero_without_loss_tokens(ms_pynative):
    """The mean over unmasked targets, bit for bit as `reduction="mean"`; a batch whose targets
    are all masked (an SFT row of prompt only) gives 0 and zero gradients, not 0/0: one process
    then steps as data-parallel ranks do, where such a batch weighs 0 (train.step.TokenWeighted)."""
    from mindxh.models.llama.model import Decoder, LossCell

    ms = ms_pynative
    cfg = ModelConfig(vocab_size=50, hidden_size=16, num_heads=2, num_kv_heads=1,
                      intermediate_size=24, max_seq_len=16)
    rng = np.random.default_rng(2)
    tokens = ms.Tensor(rng.integers(0, 50, (3, 12)).astype(np.int32))
    targets = rng.integers(0, 50, (3, 12))
    targets[rng.random((3, 12)) < 0.5] = -100
    model = Decoder(cfg, 0)
    cell = LossCell(model)
    logits = model(tokens).reshape(-1, 50)
    want = ms.ops.cross_entropy(logits, ms.Tensor(targets.reshape(-1).astype(np.int32)),
                                ignore_index=-100, reduction="mean")
    assert cell(tokens, ms.Tensor(targets.astype(np.int32))).asnumpy() == want.asnumpy()
    masked = ms.Tensor(np.full((3, 12), -100, np.int32))
    assert float(cell(tokens, masked).asnumpy()) == 0.0
    grads = ms.grad(cell, grad_position=None, weights=cell.trainable_params())(tokens, masked)
    assert all(not np.any(g.asnumpy()) for g in grads)


def _first_steps(mode: str, out, tokenizer) -> list[dict]:
    res = run_cli("train", str(TINY), "--output-dir", str(out), "--max-steps", "3", "--no-progress",
                  "--set", f"compile.mode={mode}", "--set", "train.log_every=1",
                  "--set", "optim.warmup_steps=1", "--set", f"tokenizer.path={tokenizer}",
                  "--set", "data.heldout_batches=1")
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_graph_and_pynative_give_the_same_first_losses(tmp_path, tiny_tokenizer):
    graph = _first_steps("graph", tmp_path / "graph", tiny_tokenizer)
    pynative = _first_steps("pynative", tmp_path / "pynative", tiny_tokenizer)
    assert [r["step"] for r in graph] == [1, 2, 3] == [r["step"] for r in pynative]
    for g, p in zip(graph, pynative):
        assert g["loss"] == pytest.approx(p["loss"], rel=1e-5, abs=1e-6)
        assert g["grad_norm"] == pytest.approx(p["grad_norm"], rel=1e-4)
        assert g["lr"] == pytest.approx(p["lr"], rel=1e-6)
    assert graph[2]["loss"] < graph[0]["loss"]  # and it is learning
