"""Pipeline parallel in the train step, built on CPU and read back (MindSpore compiles a
pipelined graph only on Ascend/GPU): the step differentiates the loss cell wrapped in
MindSpore's pipeline cell with `parallel.micro_batches` micro-batches, every layer under the
wrapper sits on the stage the plan says, the gradient reducer is there with buffers named as
MindSpore's pipeline pass expects, and without pipeline parallel nothing is wrapped. No
auto-parallel context is set: as in tests/test_parallel_plan.py, only what was built is
checked. The reducer's own arithmetic is plain graph code, so that part does run here."""
from __future__ import annotations

import numpy as np
import pytest
from mindspore import Tensor, nn
from mindspore.parallel.nn import Pipeline

from mindxh.config import RecipeError, load_recipe
from mindxh.config.scale import ParallelConfig, PrecisionConfig
from mindxh.config.schema import ModelConfig, Recipe, TokenizerConfig, TrainConfig
from mindxh.models.llama.model import Decoder, LossCell
from mindxh.parallel.parallelize import apply_plan
from mindxh.train.step import AccumulateStep, ApplyStep, TrainStep
from mindxh.train.trainer import _Cells

LAYERS, VOCAB = 4, 64


def recipe(grad_accum: int = 1, precision: PrecisionConfig | None = None, **parallel) -> Recipe:
    """A tiny untied model (pipeline parallel refuses tied embeddings), checked like a loaded recipe."""
    r = Recipe(model=ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=LAYERS, num_heads=4,
                                 num_kv_heads=2, intermediate_size=64, max_seq_len=16,
                                 tie_embeddings=False),
               tokenizer=TokenizerConfig(vocab_size=VOCAB),
               train=TrainConfig(seq_len=16, batch_size=8, grad_accum=grad_accum, max_steps=2),
               parallel=ParallelConfig(**parallel), precision=precision or PrecisionConfig())
    r.cross_checks()
    return r


def planned_stages(r: Recipe) -> dict[str, int]:
    """The plan's stages (`PlanRecord.stages`), from a model built apart from the step's."""
    return apply_plan(Decoder(r.model, seed=0), r).stages


PIPELINED = {
    "pp2": dict(pipeline=2, micro_batches=4),
    "pp2-tp2": dict(pipeline=2, tensor=2, micro_batches=2),
    "pp2-dp2-zero1": dict(pipeline=2, data_parallel=2, micro_batches=2, optimizer_shard="zero1"),
}


@pytest.fixture(scope="module", params=list(PIPELINED))
def built(request):
    r = recipe(**PIPELINED[request.param])
    return r, _Cells.build(r)


def test_the_step_differentiates_the_pipeline_wrapper(built):
    r, cells = built
    step = cells.step_cell
    assert isinstance(step, TrainStep) and cells.accumulate is None
    assert isinstance(step.loss_cell, Pipeline)
    assert step.loss_cell.micro_size == r.parallel.micro_batches
    assert len(step.loss_cell.micro_inputs) == r.parallel.micro_batches
    assert step.loss_cell.network is cells.loss_cell  # the plain LossCell (evaluation uses it)
    assert step.inv_micro == 1.0 / r.parallel.micro_batches  # the reported loss: micro-batch mean


def test_every_layer_under_the_wrapper_is_on_its_planned_stage(built):
    r, cells = built
    under = dict(cells.step_cell.loss_cell.network.cells_and_names())  # LossCell's: "model.<path>"
    plan = planned_stages(r)
    assert {f"layers.{i}" for i in range(LAYERS)} <= set(plan)
    for path, stage in plan.items():
        cell = under["model." + path if path else "model"]
        assert cell.pipeline_stage == stage, path
    per_stage = LAYERS // r.parallel.pipeline
    assert [cells.model.layers[i].pipeline_stage for i in range(LAYERS)] == \
        [i // per_stage for i in range(LAYERS)]
    assert cells.model.lm_head.pipeline_stage == r.parallel.pipeline - 1


def test_the_gradient_reducer_matches_the_optimizer(built):
    r, cells = built
    reducer = cells.step_cell.pp_reduce
    assert isinstance(reducer, nn.PipelineGradReducer)
    params = cells.optimizer.params
    # MindSpore's pipeline pass accumulates micro-batch gradients into `accu_grads.<weight>`
    assert [b.name for b in reducer.accu_grads] == [f"accu_grads.{p.name}" for p in params]
    names = [p.name for p in cells.step_cell.get_parameters()]  # the names the graph gets
    assert {f"accu_grads.{p.name}" for p in params} <= set(names)
    assert len(names) == len(set(names))
    assert float(reducer.scale_sense.asnumpy()) == r.parallel.micro_batches
    assert reducer.opt_shard == (r.parallel.optimizer_shard != "none")


def test_wrapping_renames_no_weight():
    """Checkpoints hold the same names with and without pipeline parallel."""
    plain = _Cells.build(recipe())
    piped = _Cells.build(recipe(pipeline=2, micro_batches=2))
    assert [p.name for p in piped.optimizer.params] == [p.name for p in plain.optimizer.params]
    assert [n for n, _ in piped.optimizer.state_parameters()] == \
        [n for n, _ in plain.optimizer.state_parameters()]


@pytest.mark.parametrize("parallel", [{}, {"tensor": 2}], ids=["single", "tp2"])
def test_no_pipeline_no_wrapper(parallel):
    cells = _Cells.build(recipe(**parallel))
    step = cells.step_cell
    assert isinstance(step.loss_cell, LossCell) and step.loss_cell is cells.loss_cell
    assert step.pp_reduce is None
    assert not any(p.name.startswith("accu_grads.") for p in step.get_parameters())


def test_accumulation_and_loss_scaling_keep_the_wrapper():
    r = recipe(grad_accum=2, pipeline=2, micro_batches=2,
               precision=PrecisionConfig(compute_dtype="float16", loss_scale="dynamic"))
    cells = _Cells.build(r)
    assert isinstance(cells.step_cell, ApplyStep) and isinstance(cells.accumulate, AccumulateStep)
    acc = cells.accumulate
    assert isinstance(acc.loss_cell, Pipeline) and acc.loss_cell.micro_size == 2
    assert isinstance(acc.pp_reduce, nn.PipelineGradReducer) and acc.scaler is not None


def test_the_reducer_returns_the_micro_batch_mean_and_clears_its_buffers():
    """The reducer alone compiles on CPU: what MindSpore accumulated, / micro_batches."""
    cells = _Cells.build(recipe(pipeline=2, micro_batches=4))
    reducer = cells.step_cell.pp_reduce
    summed = [np.full(b.shape, 8.0 + i, np.float32) for i, b in enumerate(reducer.accu_grads)]
    for buf, value in zip(reducer.accu_grads, summed):
        buf.set_data(Tensor(value))
    grads = tuple(Tensor(np.zeros(b.shape, np.float32)) for b in reducer.accu_grads)
    out = reducer(grads)
    for got, value in zip(out, summed):
        np.testing.assert_array_equal(got.asnumpy(), value / 4)
    assert all(not b.asnumpy().any() for b in reducer.accu_grads)


def test_mindspore_2_10_successor_reducer_still_fails_without_opt_shard():
    """Why mindxh uses `nn.PipelineGradReducer`: `mindspore.parallel.nn.PipelineGradReducer`
    reads an undefined `grads` when the optimizer is not sharded. If this test fails, MindSpore
    fixed it: switch `parallel.pipeline.Microbatching.grad_reducer` to the successor."""
    from mindspore import ParameterTuple
    from mindspore.parallel.nn import PipelineGradReducer

    params = ParameterTuple(_Cells.build(recipe()).model.trainable_params()[:1])
    reducer = PipelineGradReducer(params, opt_shard=False)
    with pytest.raises(NameError, match="'grads' is not defined"):
        reducer((Tensor(np.zeros(params[0].shape, np.float32)),))


def test_batch_not_divisible_by_micro_batches_is_refused_at_load(tmp_path):
    path = tmp_path / "pp.yaml"
    path.write_text("model: {vocab_size: 512, num_layers: 4, tie_embeddings: false}\n"
                    "tokenizer: {vocab_size: 512}\n"
                    "train: {batch_size: 6}\n"
                    "parallel: {pipeline: 2, micro_batches: 4}\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    message = str(exc.value)
    assert message.startswith("parallel.micro_batches")
    assert "micro_batches=4 does not divide train.batch_size=6" in message


def test_cpu_refuses_pipeline_before_any_compute(tmp_path):
    """`mindxh train` on CPU stops at launch, before the tokenizer or model is built."""
    from mindxh.train.runtime import LaunchError
    from mindxh.train.trainer import Trainer

    r = recipe(pipeline=2, micro_batches=2)
    with pytest.raises(LaunchError, match="pipeline=2.*only on Ascend"):
        Trainer(r, tmp_path / "run", show_progress=False).run()
    assert not (tmp_path / "run" / "tokenizer.model").exists()
    assert not (tmp_path / "run" / "recipe.yaml").exists()
