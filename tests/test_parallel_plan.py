"""The parallel plan, applied to a small Decoder built on CPU, read back from the cells and
primitives themselves: strategies (`prim.in_strategy`, `prim.attrs`), pipeline stages,
recompute flags. MindSpore compiles these only on Ascend; here we check what was attached.
Expert parallel on a small mixture-of-experts Decoder (EP=2, with and without TP); a dense
model refuses parallel.expert > 1."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mindxh.config import load_recipe
from mindxh.config.scale import ParallelConfig
from mindxh.config.schema import ModelConfig, MoEConfig, Recipe
from mindxh.models.llama import parallelize as llama_plan
from mindxh.models.llama.model import Decoder
from mindxh.parallel.parallelize import PlanError, apply_plan, matches, parallelize

LAYERS = 4


def build(tied: bool = True) -> Decoder:
    return Decoder(ModelConfig(vocab_size=64, hidden_size=64, num_layers=LAYERS, num_heads=8,
                               num_kv_heads=4, intermediate_size=96, max_seq_len=32,
                               tie_embeddings=tied), seed=0)


def prim(model, path: str):
    *cells, name = path.split(".")
    cell = dict(model.cells_and_names())[".".join(cells)]
    return getattr(cell, name)


def linears(model) -> list[str]:
    """Every Linear's matmul, found without the plan (a cell with a `matmul` and a `weight`)."""
    return [f"{p}.matmul" for p, c in model.cells_and_names()
            if hasattr(c, "matmul") and hasattr(c, "weight") and p]


def expected_strategies(dp: int, tp: int, vocab_parallel: bool) -> dict[str, tuple]:
    """Written out by hand from the convention in mindxh/parallel/parallelize.py."""
    col, row = ((dp, 1), (tp, 1)), ((dp, tp), (1, tp))
    per_layer = {"attn.wq": col, "attn.wk": col, "attn.wv": col, "attn.wo": row,
                 "mlp.gate": col, "mlp.up": col, "mlp.down": row}
    out = {f"layers.{i}.{name}.matmul": s for i in range(LAYERS) for name, s in per_layer.items()}
    out.update({f"layers.{i}.attn.matmul_qk": ((dp, tp, 1, 1), (dp, tp, 1, 1)) for i in range(LAYERS)})
    out["matmul_t"] = ((dp, 1), (tp, 1)) if vocab_parallel else ((dp * tp, 1), (1, 1))
    return out


@pytest.mark.parametrize("dp,tp,vocab_parallel", [(1, 2, False), (2, 4, False), (2, 4, True)])
def test_tensor_parallel_strategies_on_every_primitive(dp, tp, vocab_parallel):
    model = build(tied=True)
    record = parallelize(model, ParallelConfig(data_parallel=dp, tensor=tp,
                                               vocab_parallel=vocab_parallel))
    want = expected_strategies(dp, tp, vocab_parallel)
    assert record.parallel_mode == "semi_auto_parallel"
    assert record.strategies == want
    for path, strategy in want.items():
        p = prim(model, path)
        assert p.in_strategy == strategy, path
        assert p.attrs["in_strategy"] == strategy, path
        assert "out_strategy" not in p.attrs or p.attrs["out_strategy"] is None, path
    # nothing with a weight was left out of the plan (the untied head is absent: tied model)
    assert set(linears(model)) <= set(want)
    assert record.unmatched == ["lm_head"]
    assert "Attention.attend" in record.functional and "RMSNorm.construct" in record.functional


def test_untied_head_is_a_vocab_parallel_linear():
    model = build(tied=False)
    record = parallelize(model, ParallelConfig(data_parallel=1, tensor=4, vocab_parallel=True))
    assert prim(model, "lm_head.matmul").in_strategy == ((1, 1), (4, 1))
    assert record.styles["lm_head.matmul"] == "vocab_out"
    assert record.unmatched == []


def test_sequence_parallel_row_outputs_reduce_scatter():
    model = build()
    record = parallelize(model, ParallelConfig(data_parallel=2, tensor=2, sequence_parallel=True))
    for i in range(LAYERS):
        for name in ("attn.wo", "mlp.down"):
            p = prim(model, f"layers.{i}.{name}.matmul")
            assert p.in_strategy == ((2, 2), (1, 2))
            assert p.out_strategy == ((4, 1),) and p.attrs["out_strategy"] == ((4, 1),)
        assert getattr(prim(model, f"layers.{i}.attn.wq.matmul"), "out_strategy", None) is None
    norms = [f"layers.{i}.{n}" for i in range(LAYERS) for n in ("attn_norm", "mlp_norm")] + ["norm"]
    assert sorted(record.sequence) == sorted(norms)  # planned; RMSNorm's ops are functional


def test_pipeline_stages_split_layers_evenly():
    model = build(tied=False)
    record = parallelize(model, ParallelConfig(data_parallel=2, pipeline=2, micro_batches=4))
    stages = [model.layers[i].pipeline_stage for i in range(LAYERS)]
    assert stages == [0, 0, 1, 1]
    assert model.pipeline_stage == 0  # the Decoder itself: the embedding lookup
    assert model.norm.pipeline_stage == 1 and model.lm_head.pipeline_stage == 1
    assert record.stages == {"": 0, "layers.0": 0, "layers.1": 0, "layers.2": 1, "layers.3": 1,
                             "norm": 1, "lm_head": 1}
    assert record.micro_batches == 4
    # pipeline alone is semi-auto too: data-parallel strategies on every primitive
    assert prim(model, "layers.3.mlp.down.matmul").in_strategy == ((2, 1), (1, 1))


def test_pipeline_with_tied_embeddings_is_refused():
    with pytest.raises(PlanError, match="tie_embeddings"):
        parallelize(build(tied=True), ParallelConfig(pipeline=2, micro_batches=2))


def test_expert_parallel_needs_experts():
    with pytest.raises(PlanError, match="dense"):
        parallelize(build(), ParallelConfig(data_parallel=2, expert=2))


def build_moe(first_dense: int = 1) -> Decoder:
    return Decoder(ModelConfig(vocab_size=64, hidden_size=64, num_layers=LAYERS, num_heads=8,
                               num_kv_heads=4, intermediate_size=96, max_seq_len=32,
                               moe=MoEConfig(num_experts=4, experts_per_token=2,
                                             num_shared_experts=1, expert_intermediate_size=32,
                                             first_dense_layers=first_dense, balance="bias")),
                   seed=0)


@pytest.mark.parametrize("dp,tp,ep", [(2, 1, 2), (2, 2, 2), (4, 2, 2)])
def test_expert_parallel_strategies_on_the_expert_matmuls(dp, tp, ep):
    """Experts split over `ep` of the data-parallel ranks (their slots over the other dp/ep),
    each expert's width over tp; router replicated; shared experts as a dense MLP."""
    model = build_moe(first_dense=1)
    record = parallelize(model, ParallelConfig(data_parallel=dp, tensor=tp, expert=ep))
    want = expected_strategies(dp, tp, vocab_parallel=False)
    col, row = ((dp, 1), (tp, 1)), ((dp, tp), (1, tp))
    for i in range(1, LAYERS):  # layers 1.. are MoE: no dense mlp.gate/up/down
        for name in ("gate", "up", "down"):
            del want[f"layers.{i}.mlp.{name}.matmul"]
        want.update({f"layers.{i}.mlp.router.matmul": ((dp, 1), (1, 1)),
                     f"layers.{i}.mlp.experts.w1.matmul": ((ep, dp // ep, 1), (ep, tp, 1)),
                     f"layers.{i}.mlp.experts.w3.matmul": ((ep, dp // ep, 1), (ep, tp, 1)),
                     f"layers.{i}.mlp.experts.w2.matmul": ((ep, dp // ep, tp), (ep, 1, tp)),
                     f"layers.{i}.mlp.shared.gate.matmul": col,
                     f"layers.{i}.mlp.shared.up.matmul": col,
                     f"layers.{i}.mlp.shared.down.matmul": row})
    assert record.parallel_mode == "semi_auto_parallel"
    assert record.strategies == want
    for path, strategy in want.items():
        assert prim(model, path).in_strategy == strategy, path
    assert set(linears(model)) <= set(want)  # every weight, experts included, is planned
    assert record.styles["layers.1.mlp.experts.w2.matmul"] == "expert_rowwise"
    assert "MoE._forward" in record.functional  # the dispatch/combine: where the all-to-all goes


def test_expert_parallel_must_divide_experts_and_data_parallel():
    with pytest.raises(PlanError, match="does not divide model.moe.num_experts=4"):
        parallelize(build_moe(), ParallelConfig(data_parallel=3, expert=3))
    with pytest.raises(PlanError, match="does not divide data_parallel=2"):
        parallelize(build_moe(), ParallelConfig(data_parallel=2, expert=4))


def test_moe_plan_table_names_exist_in_an_moe_model():
    model = build_moe(first_dense=0)
    paths = [p for p, _ in model.cells_and_names()]
    for pattern in llama_plan.MOE_PLAN:
        assert any(matches(pattern, p) for p in paths), pattern


def _recompute_flags(model) -> dict[str, bool]:
    return {p: bool(c._has_config_recompute) for p, c in model.cells_and_names()}


def test_full_recompute_marks_each_block():
    model = build()
    record = parallelize(model, ParallelConfig(recompute="full"))
    assert record.recompute == [f"layers.{i}" for i in range(LAYERS)]
    for i in range(LAYERS):
        layer = model.layers[i]
        assert layer._has_config_recompute and layer._scope.startswith("recompute_")
        assert layer.get_flags().get("output_recompute") is False
    flags = _recompute_flags(model)
    assert not flags[""] and not flags["norm"]


def test_selective_recompute_marks_attention_only():
    model = build()
    record = parallelize(model, ParallelConfig(recompute="selective"))
    assert record.recompute == [f"layers.{i}.attn" for i in range(LAYERS)]
    flags = _recompute_flags(model)
    for i in range(LAYERS):
        assert flags[f"layers.{i}.attn"] and flags[f"layers.{i}.attn.wq"]  # children follow
        assert not flags[f"layers.{i}"] and not flags[f"layers.{i}.mlp"]


def test_data_parallel_only_attaches_no_strategy():
    model = build()
    record = apply_plan(model, Recipe(parallel=ParallelConfig(data_parallel=4)))
    assert record.parallel_mode == "data_parallel" and record.strategies == {}
    assert not hasattr(prim(model, "layers.0.attn.wq.matmul"), "in_strategy")


def test_plan_table_names_exist_in_the_model():
    """Every path in the family's tables names something in a built (untied) Decoder."""
    model = build(tied=False)
    paths = [p for p, _ in model.cells_and_names()]
    paths += [f"{p}.{n}" if p else n for p, c in model.cells_and_names() for n in c._primitives]
    tables = [*llama_plan.TENSOR_PLAN, *llama_plan.SEQUENCE_PLAN, *llama_plan.PIPELINE_LAST,
              llama_plan.PIPELINE_LAYERS, *(p for ps in llama_plan.RECOMPUTE.values() for p in ps)]
    for pattern in tables:
        assert any(matches(pattern, p) for p in paths), pattern


def test_star_matches_one_segment():
    assert matches("layers.*.attn", "layers.12.attn")
    assert not matches("layers.*", "layers.0.attn")
    assert matches("", "") and not matches("", "norm")


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "recipes" / "ascend").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_ascend_plan_on_a_miniature(path):
    """Each shipped Ascend recipe's plan on its model's miniature: the same layers, heads and
    options, every width shrunk (head_dim 2), so the plan's layout is checked on CPU."""
    r = load_recipe(path)
    m, p = r.model, r.parallel
    moe = dataclasses.replace(m.moe, expert_intermediate_size=2 * p.tensor)
    mini = dataclasses.replace(m, vocab_size=4 * p.tensor, hidden_size=16, head_dim=2,
                               intermediate_size=2 * p.tensor, max_seq_len=8, moe=moe)
    model = Decoder(mini, seed=0)
    record = apply_plan(model, r)
    dp, tp, ep = p.data_parallel, p.tensor, p.expert
    assert prim(model, "layers.0.attn.wq.matmul").in_strategy == ((dp, 1), (tp, 1))
    last = f"layers.{m.num_layers - 1}.mlp"
    if m.moe.enabled:  # the last layer has experts: its shared experts' down, and the experts
        assert prim(model, f"{last}.experts.w1.matmul").in_strategy == ((ep, dp // ep, 1), (ep, tp, 1))
        last += ".shared"
    down = prim(model, f"{last}.down.matmul")
    assert down.in_strategy == ((dp, tp), (1, tp))
    assert getattr(down, "out_strategy", None) == (((dp * tp, 1),) if p.sequence_parallel else None)
    assert set(linears(model)) <= set(record.strategies)
    if p.pipeline > 1:
        per_stage = [list(record.stages.values()).count(s) for s in range(p.pipeline)]
        assert [model.layers[i].pipeline_stage for i in range(m.num_layers)] == \
            [i * p.pipeline // m.num_layers for i in range(m.num_layers)]
        assert sum(per_stage) == m.num_layers + 3  # + the Decoder, norm and lm_head
    n_recomputed = {"none": 0, "selective": m.num_layers, "full": m.num_layers}[p.recompute]
    assert len(record.recompute) == n_recomputed
