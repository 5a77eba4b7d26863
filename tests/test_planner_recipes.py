"""Every cluster recipe under recipes/ascend shrinks, with `--set` only, to a CPU run of the
same code path: the planner accepts the shrunk plan and `mindxh train` runs 2 real steps."""
from __future__ import annotations

import json

import pytest
from conftest import REPO, run_cli

from mindxh.planner import load_for_plan, make_plan, profile_for

ASCEND = sorted((REPO / "recipes" / "ascend").glob("*.yaml"))

SHRINK = [
    "model.vocab_size=null", "model.hidden_size=64", "model.num_layers=2", "model.num_heads=4",
    "model.num_kv_heads=2", "model.intermediate_size=128", "model.max_seq_len=32",
    "data.source=synthetic", "data.datasets=[]", "data.heldout_batches=1",
    "train.seq_len=32", "train.batch_size=2", "train.grad_accum=1", "train.log_every=1",
    "train.checkpoint_every=2", "train.keep_last=1", "optim.warmup_steps=1",
    "parallel.data_parallel=1", "parallel.tensor=1", "parallel.pipeline=1",
    "parallel.micro_batches=1", "parallel.expert=1", "parallel.sequence_parallel=false",
    "parallel.vocab_parallel=false", "parallel.optimizer_shard=none", "parallel.recompute=none",
    "compile.device=CPU", "compile.max_device_memory=null", "precision.compute_dtype=float32",
    "precision.loss_scale=none", "cluster.hardware=cpu", "cluster.devices=null",
    "metrics.device=auto", "metrics.dtype=float32",
]
# a mixture-of-experts recipe keeps its experts, fewer and narrower
MOE_SHRINK = ["model.moe.num_experts=4", "model.moe.experts_per_token=2",
              "model.moe.expert_intermediate_size=32", "model.moe.first_dense_layers=1"]


def test_there_are_cluster_recipes():
    names = {p.name for p in ASCEND}
    assert {"x1-13b-910b-64.yaml", "llama2-70b-910b-512.yaml", "qwen-32b-910c-384.yaml",
            "llama2-7b-910b.yaml"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", ASCEND, ids=lambda p: p.name)
def test_recipe_shrinks_to_a_cpu_run(path, tiny_tokenizer, tmp_path):
    overrides = SHRINK + [f"tokenizer.path={tiny_tokenizer}"]
    if "\n  moe:" in path.read_text():
        overrides += MOE_SHRINK
    recipe, problems = load_for_plan(path, overrides)
    assert problems == []
    plan = make_plan(recipe, profile_for("cpu"))
    assert plan.fits and plan.setup.devices == 1
    sets = [a for o in overrides for a in ("--set", o)]
    out = tmp_path / "run"
    res = run_cli("train", str(path), "--max-steps", "2", "--output-dir", str(out),
                  "--no-progress", *sets, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "done: 2 steps" in res.stdout
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert any(r.get("step") == 2 for r in lines)
