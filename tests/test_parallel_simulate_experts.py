"""Expert parallel replayed in NumPy (mindxh/parallel/simulate_experts.py) against the real
MindSpore mixture-of-experts Decoder: tokens split over data ranks, experts over expert ranks
as the plan's strategies say, an explicit all-to-all each way. The MoE layer's output and the
full model's logits and loss match the unsharded model to 1e-5 for EP=2 and EP=4 (alone and
with TP=2), with no drops (the plain forward, capacity T) and with capacity drops (the
training forward), whose count matches MindSpore's. Deliberately wrong plans fail."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import randomise_expert_bias

from mindxh.config.scale import ParallelConfig
from mindxh.config.schema import ModelConfig, MoEConfig
from mindxh.models.llama.parallelize import MOE_PLAN, TENSOR_PLAN
from mindxh.parallel import simulate_experts as sim_ep
from mindxh.parallel.simulate import PlanMismatch
from mindxh.parallel.simulate_experts import moe_layer, simulate_experts

TOL = 1e-5
LAYOUTS = [(2, 2, 1), (4, 2, 1), (4, 4, 1), (2, 2, 2), (4, 2, 2)]  # (dp, ep, tp)
CONFIGS = {  # Mixtral/GShard-like and DeepSeek-V3-like routing
    "softmax-aux": dict(scoring="softmax", balance="aux_loss", aux_loss_coef=0.01),
    "sigmoid-bias": dict(scoring="sigmoid", balance="bias"),
}


@pytest.fixture(scope="module")
def ms():
    import mindspore

    mindspore.set_device("CPU")
    mindspore.set_context(mode=mindspore.PYNATIVE_MODE)  # the statistics are assigned
    return mindspore


def parallel(dp, ep, tp):
    return ParallelConfig(data_parallel=dp, expert=ep, tensor=tp)


def moe_config(**moe) -> ModelConfig:
    """8 experts (2 per rank at EP=4), top-2, one shared; capacity_factor 1: C = T*k/E."""
    base = dict(num_experts=8, experts_per_token=2, num_shared_experts=1,
                expert_intermediate_size=16, capacity_factor=1.0)
    return ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                       intermediate_size=48, max_seq_len=16, moe=MoEConfig(**{**base, **moe}))


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request, ms):
    """A 2-layer MoE Decoder, its weights, a batch of 4 x 8 tokens, and MindSpore's plain and
    training logits, loss (LossCell: training forward, plus the balance loss) and per-layer
    routing statistics."""
    from mindxh.models.llama.model import Decoder, LossCell

    cfg = moe_config(**CONFIGS[request.param])
    model = Decoder(cfg, seed=3)
    rng = np.random.default_rng(0)
    randomise_expert_bias(model, rng)
    tokens = rng.integers(0, 64, (4, 8)).astype(np.int32)
    targets = rng.integers(0, 64, (4, 8)).astype(np.int32)
    targets[0, :3] = -100
    weights = {p.name: p.asnumpy() for p in model.get_parameters()}
    plain = model(ms.Tensor(tokens)).asnumpy()
    train = model(ms.Tensor(tokens), None, None, True)[0].asnumpy()
    loss = float(LossCell(model)(ms.Tensor(tokens), ms.Tensor(targets)).asnumpy())
    stats = [(m.mlp.routed.asnumpy(), float(m.mlp.dropped.asnumpy()[0]),
              float(m.mlp.balance.asnumpy()[0])) for m in model.layers]
    return cfg, model, weights, tokens, targets, plain, train, loss, stats


def fails(run, want) -> bool:
    """A plan fails the check if the replay refuses it or computes other numbers."""
    try:
        got = run()
    except PlanMismatch:
        return True
    return bool(np.abs(got - want).max() > 100 * TOL)


@pytest.mark.parametrize("dp,ep,tp", LAYOUTS)
def test_no_drop_forward_matches_unsharded(case, dp, ep, tp):
    """The plain forward (capacity T: no choice can drop), under expert parallel."""
    cfg, _, weights, tokens, _, plain, _, _, _ = case
    result = simulate_experts(weights, cfg, tokens, parallel=parallel(dp, ep, tp))
    assert np.abs(result.logits - plain).max() < TOL
    assert [s.dropped for s in result.layers] == [0, 0]
    # per MoE layer: the counts all-gathered, the all-to-all out and back; under TP the
    # routed experts' w2 partial sums add one all-reduce to attention's and the shared MLP's
    assert result.collectives["all_to_all"] == 2 * cfg.num_layers
    assert result.collectives["all_gather"] == cfg.num_layers
    assert result.collectives["all_reduce"] == (3 * cfg.num_layers if tp > 1 else 0)


@pytest.mark.parametrize("dp,ep,tp", LAYOUTS)
def test_training_forward_with_drops_matches_unsharded(case, dp, ep, tp):
    """Capacity C = ceil(T*k/E) = 8 slots per expert for 64 choices: many drop, and the same
    ones as on one device (global capacity and slot order, see the module doc): logits,
    loss (with the balance loss) and every layer's statistics agree."""
    cfg, _, weights, tokens, targets, _, train, loss, stats = case
    result = simulate_experts(weights, cfg, tokens, targets, parallel(dp, ep, tp), train=True)
    assert np.abs(result.logits - train).max() < TOL
    assert abs(result.loss - loss) < TOL
    for got, (routed, dropped, balance) in zip(result.layers, stats):
        assert dropped > 0 and got.dropped == dropped
        assert got.routed.tolist() == routed.tolist()
        assert abs(got.balance - balance) < TOL


@pytest.mark.parametrize("dp,ep,tp", LAYOUTS)
@pytest.mark.parametrize("train", [False, True])
def test_moe_layer_matches_the_mindspore_cell(case, ms, dp, ep, tp, train):
    cfg, model, weights, _, _, _, _, _, _ = case
    x = np.random.default_rng(7).normal(size=(4, 8, 32)).astype(np.float32)
    cell = model.layers[1].mlp
    want = cell.with_aux(ms.Tensor(x))[0] if train else cell(ms.Tensor(x))
    y, stats, _ = moe_layer(weights, cfg, x, "layers.1.mlp", parallel(dp, ep, tp), train=train)
    assert np.abs(y - want.asnumpy()).max() < TOL
    if train:
        assert stats.dropped == cell.dropped.asnumpy()[0] > 0


def test_dropped_choices_counted_across_ranks(ms):
    """test_moe's constructed case split over 2 data ranks: tokens 0-3 (rank 0) rank experts
    (0, 1), tokens 4-7 (rank 1) rank (1, 0); capacity ceil(8*2/4) = 4. Globally the first
    choices fill experts 0 and 1 (4 each, across both ranks), so all 8 second choices drop and
    experts 2, 3 stay empty; each token keeps its first choice. (A per-rank capacity of 2
    would also drop 8, but other ones: half the first choices.)"""
    from mindxh.models.llama.model import Decoder

    cfg = ModelConfig(vocab_size=64, hidden_size=8, num_layers=1, num_heads=2, num_kv_heads=1,
                      intermediate_size=24, max_seq_len=16,
                      moe=MoEConfig(num_experts=4, experts_per_token=2, num_shared_experts=0,
                                    expert_intermediate_size=16, capacity_factor=1.0))
    model = Decoder(cfg, seed=0)
    router = np.zeros((4, 8), np.float32)
    router[0, 0] = router[1, 1] = 3.0
    router[1, 0] = router[0, 1] = 2.0
    model.layers[0].mlp.router.weight.set_data(ms.Tensor(router))
    x = np.zeros((8, 8), np.float32)
    x[:4, 0], x[4:, 1] = 1.0, 1.0
    x[:, 2:] = np.random.default_rng(2).normal(size=(8, 6))
    x = x.reshape(2, 4, 8)  # one sequence per data rank
    cell = model.layers[0].mlp
    want = cell.with_aux(ms.Tensor(x))[0].asnumpy()
    weights = {p.name: p.asnumpy() for p in model.get_parameters()}
    y, stats, comm = moe_layer(weights, cfg, x, "layers.0.mlp", parallel(2, 2, 1), train=True)
    assert stats.dropped == cell.dropped.asnumpy()[0] == 8
    assert stats.routed.tolist() == [8, 8, 0, 0]
    assert np.abs(y - want).max() < TOL
    assert comm["all_to_all"] == 2


@pytest.mark.parametrize("wrong", [
    # the experts' w1/w3 weights cut on their output width instead of the experts axis
    {"layers.*.mlp.experts.w1": ((2, 1, 1), (1, 2, 1)),
     "layers.*.mlp.experts.w3": ((2, 1, 1), (1, 2, 1))},
    # w1/w3 slots cut by capacity (no expert parallel) while w2 still cuts by expert
    {"layers.*.mlp.experts.w1": ((1, 2, 1), (1, 1, 1)),
     "layers.*.mlp.experts.w3": ((1, 2, 1), (1, 1, 1))},
    # w2 contracts over F uncut while w1/w3 left it cut over tensor ranks
    {"layers.*.mlp.experts.w1": ((2, 1, 1), (2, 2, 1)),
     "layers.*.mlp.experts.w3": ((2, 1, 1), (2, 2, 1)),
     "layers.*.mlp.experts.w2": ((2, 1, 1), (2, 2, 1))},
])
def test_experts_cut_on_the_wrong_axis_fails(case, wrong):
    cfg, _, weights, tokens, _, plain, _, _, _ = case
    tp = 2 if "layers.*.mlp.experts.w2" in wrong else 1
    plan = {**TENSOR_PLAN, **MOE_PLAN, **wrong}
    assert fails(lambda: simulate_experts(weights, cfg, tokens, parallel=parallel(2, 2, tp),
                                          plan=plan).logits, plain)


MISROUTES = {  # what the return exchange (plain output rows; the dispatch sends Parcels) does
    "next rank": lambda recv: recv[1:] + recv[:1],  # each rank's rows go to the next rank
    "reversed rows": lambda recv: [[rows[::-1] for rows in r] for r in recv],  # counts fit
}


@pytest.mark.parametrize("misroute", list(MISROUTES))
def test_all_to_all_back_to_the_wrong_place_fails(case, monkeypatch, misroute):
    """Rows sent back to the wrong rank are refused (their count does not match what that
    rank sent); rows back to the right rank but the wrong tokens fit, and give wrong numbers."""
    cfg, _, weights, tokens, _, plain, _, _, _ = case
    exchange = sim_ep.all_to_all

    def misrouted(send):
        recv = exchange(send)
        return recv if isinstance(send[0][0], sim_ep.Parcel) else MISROUTES[misroute](recv)

    monkeypatch.setattr(sim_ep, "all_to_all", misrouted)
    for layout in LAYOUTS:
        if misroute == "next rank":
            with pytest.raises(PlanMismatch, match="got .* back"):
                simulate_experts(weights, cfg, tokens, parallel=parallel(*layout))
        else:
            logits = simulate_experts(weights, cfg, tokens, parallel=parallel(*layout)).logits
            assert np.abs(logits - plain).max() > 100 * TOL


def test_positions_counted_per_rank_fail(case, monkeypatch):
    """Skipping the count exchange (each rank numbers its slots from 0, as if alone) puts two
    ranks' rows into the same slot under global capacity."""
    cfg, _, weights, tokens, _, _, train, _, _ = case
    positions = sim_ep._ExpertSim.positions

    def alone(self, chosen):
        return [positions(self, [c])[0] for c in chosen]

    monkeypatch.setattr(sim_ep._ExpertSim, "positions", alone)
    assert fails(lambda: simulate_experts(weights, cfg, tokens, parallel=parallel(2, 2, 1),
                                          train=True).logits, train)


def test_capacity_the_slot_split_does_not_divide_fails(case):
    """capacity_factor 1.125: C = ceil(1.125 * 32 * 2 / 8) = 9 slots per expert, which the
    plan's (ep, dp/ep, 1) cut of [E, C, H] cannot split over dp/ep = 2 ranks."""
    cfg, _, weights, tokens, _, _, _, _, _ = case
    odd = moe_config(**{**CONFIGS["softmax-aux"], "capacity_factor": 1.125})
    assert odd.moe.capacity(32) == 9
    with pytest.raises(PlanMismatch, match="capacity slots"):
        simulate_experts(weights, odd, tokens, parallel=parallel(4, 2, 1), train=True)
    simulate_experts(weights, odd, tokens, parallel=parallel(2, 2, 1), train=True)  # 9 / 1: fine
