"""Tensor parallel replayed in NumPy (mindxh/parallel/simulate.py) against the real MindSpore
Decoder: the plan's splits and collectives reproduce the unsharded logits and loss to 1e-5
for TP=2 and TP=4, and deliberately wrong plans fail. Mixture-of-experts layers are
replayed in tests/test_moe.py, expert parallel in tests/test_parallel_simulate_experts.py."""
from __future__ import annotations

import numpy as np
import pytest
from mindspore import Tensor

from mindxh.config.schema import ModelConfig
from mindxh.models.llama.model import Decoder, LossCell
from mindxh.models.llama.parallelize import TENSOR_PLAN
from mindxh.parallel.simulate import PlanMismatch, Style, simulate

TOL = 1e-5
LAYERS = 2
CONFIGS = {  # Llama-style GQA with tied head; Qwen-style: untied, q/k norm, q/k/v bias
    "llama": {"tie_embeddings": True},
    "qwen": {"tie_embeddings": False, "qk_norm": True, "qkv_bias": True},
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request):
    """A small Decoder, its weights as NumPy, a batch, and MindSpore's logits and loss."""
    cfg = ModelConfig(vocab_size=64, hidden_size=64, num_layers=LAYERS, num_heads=8,
                      num_kv_heads=4, intermediate_size=96, max_seq_len=16,
                      **CONFIGS[request.param])
    model = Decoder(cfg, seed=3)
    rng = np.random.default_rng(0)
    for p in model.get_parameters():  # non-trivial biases and norm gains, so they count
        if p.name.endswith("bias") or "norm" in p.name:
            p.set_data(Tensor(rng.normal(1.0 if "norm" in p.name else 0.0, 0.2, p.shape).astype(np.float32)))
    tokens = rng.integers(0, 64, (2, 12)).astype(np.int32)
    targets = rng.integers(0, 64, (2, 12)).astype(np.int32)
    targets[0, :3] = -100
    weights = {p.name: p.asnumpy() for p in model.get_parameters()}  # before a wrapper renames them
    logits = model(Tensor(tokens)).asnumpy()
    loss = float(LossCell(model)(Tensor(tokens), Tensor(targets)).asnumpy())
    return cfg, weights, tokens, targets, logits, loss


def agrees(result, logits, loss) -> bool:
    return bool(np.abs(result.logits - logits).max() < TOL and abs(result.loss - loss) < TOL)


def test_reference_forward_matches_mindspore(case):
    cfg, weights, tokens, targets, logits, loss = case
    assert agrees(simulate(weights, cfg, tokens, targets, tp=1), logits, loss)


@pytest.mark.parametrize("tp", [2, 4])
@pytest.mark.parametrize("vocab_parallel", [False, True])
def test_tensor_parallel_matches_unsharded(case, tp, vocab_parallel):
    cfg, weights, tokens, targets, logits, loss = case
    result = simulate(weights, cfg, tokens, targets, tp=tp, vocab_parallel=vocab_parallel)
    assert np.abs(result.logits - logits).max() < TOL
    assert abs(result.loss - loss) < TOL
    # Megatron's count: one all-reduce after attention and one after the MLP, per layer; a
    # vocab-parallel embedding adds one, its cross entropy three (max, sum of exps, target)
    assert result.collectives["all_reduce"] == 2 * LAYERS + (4 if vocab_parallel else 0)
    assert result.collectives["all_gather"] == 0


def test_row_parallel_treated_as_column_fails(case):
    cfg, weights, tokens, targets, _, _ = case
    wrong = {**TENSOR_PLAN, "layers.*.attn.wo": "colwise"}
    with pytest.raises(PlanMismatch, match="wo"):
        simulate(weights, cfg, tokens, targets, tp=2, plan=wrong)


def test_wo_split_on_output_axis_fails(case):
    cfg, weights, tokens, targets, _, _ = case
    wrong = {**TENSOR_PLAN, "layers.*.attn.wo": Style("out", "sum")}
    with pytest.raises(PlanMismatch):
        simulate(weights, cfg, tokens, targets, tp=2, plan=wrong)


def test_missing_all_reduce_gives_wrong_numbers(case):
    """A row-parallel down projection whose partial sums are never reduced: every shard runs
    to the end, and the logits are wrong."""
    cfg, weights, tokens, targets, logits, loss = case
    wrong = {**TENSOR_PLAN, "layers.*.mlp.down": Style("in", "none")}
    result = simulate(weights, cfg, tokens, targets, tp=2, plan=wrong)
    assert not agrees(result, logits, loss)
    assert np.abs(result.logits - logits).max() > 100 * TOL


def test_kv_heads_left_whole_fails(case):
    """q split by head but k/v replicated: the attention core gets mismatched heads."""
    cfg, weights, tokens, targets, _, _ = case
    wrong = {k: v for k, v in TENSOR_PLAN.items() if k not in ("layers.*.attn.wk", "layers.*.attn.wv")}
    with pytest.raises(PlanMismatch):
        simulate(weights, cfg, tokens, targets, tp=2, plan=wrong)


def test_split_that_does_not_divide_fails(case):
    cfg, weights, tokens, targets, _, _ = case
    with pytest.raises(PlanMismatch):
        simulate(weights, cfg, tokens, targets, tp=8)  # 4 KV heads over 8 shards
