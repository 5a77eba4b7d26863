"""Mixture of experts (mindxh/models/llama/moe.py): routing, capacity drops, the balance loss
and bias balancing checked against NumPy on constructed inputs; parameter counts; the plan's
tensor-parallel replay; and the tiny MoE recipe trained, killed and resumed through the CLI."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import REPO, randomise_expert_bias, run_cli
from safetensors.numpy import load_file

from mindxh.checkpoint.store import FAULT_ENV
from mindxh.config.schema import ModelConfig, MoEConfig

MOE_RECIPE = REPO / "recipes" / "tiny" / "pretrain-moe.yaml"


@pytest.fixture(scope="module")
def ms():
    import mindspore

    mindspore.set_device("CPU")
    mindspore.set_context(mode=mindspore.PYNATIVE_MODE)
    return mindspore


def config(**moe) -> ModelConfig:
    base = dict(num_experts=4, experts_per_token=2, num_shared_experts=1,
                expert_intermediate_size=16)
    return ModelConfig(vocab_size=64, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1,
                       intermediate_size=24, max_seq_len=16, moe=MoEConfig(**{**base, **moe}))


def layer(ms, cfg: ModelConfig, router=None):
    from mindxh.models.llama.moe import MoE

    cell = MoE(cfg, np.random.default_rng(0))
    if router is not None:
        cell.router.weight.set_data(ms.Tensor(np.asarray(router, np.float32)))
    return cell


def np_probs(x, w, scoring="softmax"):
    logits = x.astype(np.float64) @ w.T
    if scoring == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
def test_routing_picks_top_k_and_the_bias_only_chooses(ms, scoring):
    cfg = config(scoring=scoring, balance="bias", experts_per_token=2)
    cell = layer(ms, cfg)
    x = np.random.default_rng(1).normal(size=(32, 8)).astype(np.float32)
    bias = np.array([0.0, 0.3, -0.2, 0.05], np.float32)
    cell.expert_bias.set_data(ms.Tensor(bias))
    _, idx, gates = (t.asnumpy() for t in cell.route(ms.Tensor(x)))
    probs = np_probs(x, cell.router.weight.asnumpy(), scoring)
    want = np.argsort(-(probs + bias), -1, kind="stable")[:, :2]  # chosen with the bias...
    assert np.array_equal(idx, want)
    picked = np.take_along_axis(probs, want, -1)  # ...weighted without it
    np.testing.assert_allclose(gates, picked / picked.sum(-1, keepdims=True), rtol=1e-5)
    assert not cell.expert_bias.requires_grad


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
def test_one_expert_per_token_still_trains_the_router_through_the_loss(ms, scoring):
    """A normalised top-1 gate is exactly 1: the router got no gradient from the loss (1e-11)
    and stayed at its initial weights under bias or no balancing."""
    from mindspore import ops

    cfg = config(scoring=scoring, balance="none", experts_per_token=1, num_shared_experts=0)
    cell = layer(ms, cfg)
    x = ms.Tensor(np.random.default_rng(2).normal(size=(2, 16, 8)).astype(np.float32))
    _, _, gates = cell.route(x.reshape(-1, 8))
    assert not np.allclose(gates.asnumpy(), 1.0)  # the raw score is the gate
    grad = ops.GradOperation(get_by_list=True)(lambda v: cell(v).sum(),
                                               ms.ParameterTuple([cell.router.weight]))(x)[0]
    assert np.abs(grad.asnumpy()).max() > 1e-6


def test_capacity_drops_are_counted_exactly_and_contribute_nothing(ms):
    """8 tokens, top-2 of 4 experts, capacity_factor 1 -> 4 slots each. Tokens 0-3 rank experts
    (0, 1), tokens 4-7 (1, 0): first choices fill both experts, so all 8 second choices drop;
    experts 2 and 3 stay empty. Each token keeps exactly its first choice, weighted by its gate."""
    cfg = config(capacity_factor=1.0, num_shared_experts=0)
    router = np.zeros((4, 8), np.float32)
    router[0, 0] = router[1, 1] = 3.0
    router[1, 0] = router[0, 1] = 2.0
    cell = layer(ms, cfg, router)
    x = np.zeros((8, 8), np.float32)
    x[:4, 0], x[4:, 1] = 1.0, 1.0
    x[:, 2:] = np.random.default_rng(2).normal(size=(8, 6))  # distinct tokens, same ranking
    y, aux = cell.with_aux(ms.Tensor(x))
    assert cell.dropped.asnumpy()[0] == 8.0
    assert cell.routed.asnumpy().tolist() == [8.0, 8.0, 0.0, 0.0]  # choices, before capacity
    w1, w3, w2 = (getattr(cell.experts, n).weight.asnumpy().astype(np.float64) for n in ("w1", "w3", "w2"))

    def expert(e, v):
        g, u = v @ w1[e].T, v @ w3[e].T
        return (g / (1 + np.exp(-g)) * u) @ w2[e].T

    probs = np_probs(x, router)
    first = np.where(np.arange(8) < 4, 0, 1)
    second = 1 - first
    gate = probs[np.arange(8), first] / (probs[np.arange(8), first] + probs[np.arange(8), second])
    want = np.stack([gate[t] * expert(first[t], x[t].astype(np.float64)) for t in range(8)])
    np.testing.assert_allclose(y.asnumpy(), want, rtol=1e-4, atol=1e-6)
    assert float(aux.asnumpy()) == pytest.approx(0.01 * 4 * (0.5 * probs[:, 0].mean()
                                                             + 0.5 * probs[:, 1].mean()), rel=1e-5)
    plain = cell(ms.Tensor(x)).asnumpy()  # the plain forward routes every choice
    assert not np.allclose(plain, y.asnumpy())


@pytest.mark.parametrize("k", [1, 2, 3])
def test_aux_loss_is_switch_gshard_formula(ms, k):
    cfg = config(balance="aux_loss", aux_loss_coef=0.03, experts_per_token=k)
    cell = layer(ms, cfg)
    x = np.random.default_rng(k).normal(size=(40, 8)).astype(np.float32)
    _, aux = cell.with_aux(ms.Tensor(x))
    probs = np_probs(x, cell.router.weight.asnumpy())
    chosen = np.argsort(-probs, -1, kind="stable")[:, :k]
    f = np.bincount(chosen.ravel(), minlength=4) / (40 * k)  # share of the k*T choices
    want = 0.03 * 4 * float((f * probs.mean(0)).sum())
    assert float(aux.asnumpy()) == pytest.approx(want, rel=1e-5)
    assert cell.routed.asnumpy().tolist() == (f * 40 * k).tolist()
    assert cell.balance.asnumpy()[0] == pytest.approx(want / 0.03, rel=1e-5)


def test_bias_balancing_moves_a_skewed_router_towards_uniform(ms):
    from mindxh.train.moe_balance import ExpertBalance

    cfg = config(scoring="sigmoid", balance="bias", bias_update_rate=0.01, capacity_factor=None)
    router = np.random.default_rng(3).normal(0, 0.1, (4, 8)).astype(np.float32)
    router[0] += 0.6  # every token prefers expert 0, then 1
    router[1] += 0.3
    cell = layer(ms, cfg, router)
    x = ms.Tensor((np.random.default_rng(4).normal(size=(64, 8)) + 1.0).astype(np.float32))
    balance = ExpertBalance([cell], rate=0.01)
    spreads = []
    for _ in range(40):
        cell.with_aux(x)
        load = cell.routed.asnumpy() / (64 * 2)
        spreads.append(float(load.max() - load.min()))
        balance()
    assert spreads[0] > 0.45  # skewed at first: experts 0 and 1 take almost every choice
    assert max(spreads[-10:]) < spreads[0] / 4  # then near uniform (sign steps: a small cycle)
    bias = cell.expert_bias.asnumpy()
    assert bias[0] < 0 < bias[3]  # the busy expert pushed down, the idle one up
    assert np.allclose(bias / 0.01, np.round(bias / 0.01), atol=1e-3)  # whole multiples of the rate


@pytest.mark.parametrize("moe", [
    dict(first_dense_layers=1),
    dict(num_shared_experts=0, experts_per_token=1),
    dict(num_shared_experts=2, expert_intermediate_size=None, balance="bias"),
])
def test_total_and_active_counts_equal_the_built_models(ms, moe):
    from mindxh.models.accounting import count_parameters
    from mindxh.models.llama.model import build_model
    from mindxh.planner.params import parameter_counts

    cfg = config(**moe)
    counts = count_parameters(build_model(cfg, 0))
    assert counts == parameter_counts(cfg)
    m = cfg.moe
    expert = 3 * cfg.hidden_size * m.expert_width(cfg.intermediate_size)
    moe_layers = cfg.num_layers - m.first_dense_layers
    assert counts["total"] - counts["active"] == moe_layers * (m.num_experts - m.experts_per_token) * expert
    dense = parameter_counts(dataclasses.replace(cfg, moe=MoEConfig()))
    assert dense["active"] == dense["total"]


def test_mfu_uses_active_parameters():
    from mindxh.models.accounting import training_flops_per_token
    from mindxh.planner.params import parameter_counts

    cfg = config()
    counts = parameter_counts(cfg)
    by_active = training_flops_per_token(cfg, counts, 16)
    by_total = training_flops_per_token(cfg, {**counts, "active_non_embedding": counts["non_embedding"]}, 16)
    assert by_total - by_active == 6 * (counts["total"] - counts["active"])


def test_dense_loss_cell_is_unchanged_and_plain_forward_records_nothing(ms):
    from mindxh.models.llama.model import Decoder, LossCell

    dense = Decoder(ModelConfig(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2,
                                num_kv_heads=1, intermediate_size=24, max_seq_len=16), 0)
    tokens = ms.Tensor(np.random.default_rng(5).integers(0, 64, (2, 8)).astype(np.int32))
    logits = dense(tokens).reshape(-1, 64)
    want = ms.ops.cross_entropy(logits, tokens.reshape(-1), ignore_index=-100, reduction="mean")
    assert LossCell(dense)(tokens, tokens).asnumpy() == want.asnumpy()  # bitwise
    model = Decoder(config(balance="bias"), 0)
    model(tokens)  # the plain forward (generation, GRPO): no statistics, no bias change
    for p in model.get_parameters():
        if not p.requires_grad:
            assert not p.asnumpy().any(), p.name


@pytest.mark.parametrize("train", [False, True])
def test_tensor_parallel_replay_of_the_moe_mlp_matches_mindspore(ms, train):
    from mindxh.models.llama.model import Decoder
    from mindxh.parallel.simulate import simulate

    cfg = ModelConfig(vocab_size=64, hidden_size=64, num_layers=3, num_heads=8, num_kv_heads=4,
                      intermediate_size=96, max_seq_len=16,
                      moe=MoEConfig(num_experts=4, experts_per_token=2, num_shared_experts=1,
                                    expert_intermediate_size=32, first_dense_layers=1,
                                    balance="bias", capacity_factor=1.0))
    model = Decoder(cfg, seed=3)
    rng = np.random.default_rng(0)
    randomise_expert_bias(model, rng)
    tokens = rng.integers(0, 64, (2, 12)).astype(np.int32)
    weights = {p.name: p.asnumpy() for p in model.get_parameters()}
    out = model(ms.Tensor(tokens), None, None, True)[0] if train else model(ms.Tensor(tokens))
    result = simulate(weights, cfg, tokens, tp=2, train=train)
    assert np.abs(result.logits - out.asnumpy()).max() < 1e-5
    # per layer: attention and MLP; an MoE layer's routed experts and shared experts each
    assert result.collectives["all_reduce"] == 3 * 2 + 2


def test_the_moe_910c_recipe_plans_and_fits():
    res = run_cli("plan", str(REPO / "recipes" / "ascend" / "moe-910c.yaml"), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    plan = json.loads(res.stdout)
    assert plan["fits"] and plan["layout"]["expert"] == 16
    assert plan["parameters"]["active"] < plan["parameters"]["total"] / 10
    assert any(c["dimension"] == "expert" for c in plan["communication"])


def _train(out, tokenizer, *extra, env=None):
    return run_cli("train", str(MOE_RECIPE), "--output-dir", str(out), "--no-progress",
                   "--max-steps", "20", "--set", "train.checkpoint_every=10",
                   "--set", "train.log_every=5", "--set", "train.keep_last=5",
                   "--set", "train.seq_len=64", "--set", f"tokenizer.path={tokenizer}",
                   "--set", "data.heldout_batches=1", *extra, env=env)


def _rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_tokenizer):
    out = tmp_path_factory.mktemp("moe-straight")
    res = _train(out, tiny_tokenizer)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def test_tiny_moe_recipe_trains_in_graph_mode_and_logs_expert_load(straight):
    rows = _rows(straight)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5 and rows[-1]["loss"] < np.log(512)
    for r in rows:
        assert len(r["moe_load"]) == 2 and all(len(layer) == 4 for layer in r["moe_load"])
        assert all(sum(layer) == pytest.approx(1.0, abs=1e-3) for layer in r["moe_load"])
        assert 0.0 <= r["moe_dropped_frac"] < 1.0 and r["moe_load_max_min"] >= 1.0
        assert r["moe_aux_loss"] == 0.0 and r["moe_balance"] > 0  # bias balancing: no loss term
    bias = load_file(str(straight / "checkpoints/step-00000020/model.safetensors"))
    assert np.abs(bias["layers.0.mlp.expert_bias"]).max() > 0  # updated by the train step


def test_moe_resume_after_kill_is_bitwise_identical(tmp_path, tiny_tokenizer, straight):
    crashed = tmp_path / "crashed"
    res = _train(crashed, tiny_tokenizer, env={FAULT_ENV: "20"})
    assert res.returncode == -9, res.stderr[-2000:]
    res = _train(crashed, tiny_tokenizer, "--resume")
    assert res.returncode == 0 and "step-00000010" in res.stderr, res.stderr[-2000:]
    for name in ("model", "optimizer"):
        a = load_file(str(straight / f"checkpoints/step-00000020/{name}.safetensors"))
        b = load_file(str(crashed / f"checkpoints/step-00000020/{name}.safetensors"))
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name
    assert _rows(straight) == [{**r, "tokens_per_s": s["tokens_per_s"], "mfu": s["mfu"],
                                "peak_rss_mb": s["peak_rss_mb"]}
                               for r, s in zip(_rows(crashed), _rows(straight))]
