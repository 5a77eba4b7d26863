"""`mindxh plan`: hand-checked memory and communication for a small plan, reasons for an
impossible one (exit 1, JSON too), side-by-side ratios, and every Ascend recipe plans fast."""
from __future__ import annotations

import json
import time

import pytest
from conftest import REPO, run_cli

from mindxh.config.hardware import PROFILES, GiB, lookup_profile
from mindxh.planner import load_for_plan, make_plan, profile_for

ASCEND = sorted((REPO / "recipes" / "ascend").glob("*.yaml"))

SMALL = """name: small-plan
model: {vocab_size: 256, hidden_size: 64, num_layers: 4, num_heads: 4, num_kv_heads: 2,
        intermediate_size: 128, max_seq_len: 32, tie_embeddings: false}
tokenizer: {path: tok.model, vocab_size: 256}
train: {seq_len: 32, batch_size: 8, grad_accum: 1}
compile: {device: Ascend}
parallel: {data_parallel: 2, tensor: 2, pipeline: 2, micro_batches: 4, sequence_parallel: true,
           optimizer_shard: zero1, recompute: selective}
precision: {compute_dtype: bfloat16}
cluster: {hardware: 910B, devices_per_node: 8}
metrics: {device: 910B, dtype: bfloat16}
"""


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def plan_of(path, *overrides, hardware="910B"):
    recipe, problems = load_for_plan(path, list(overrides))
    return make_plan(recipe, profile_for(hardware), problems)


def test_small_plan_memory_by_hand(small):
    # h=64, a=4 heads of d=16, kv=2, f=128, V=256; dp=2, tp=2, pp=2 (2 layers a stage).
    # layer: wq 64*64 + wk, wv 2*64*32 + wo 64*64 = 12,288; MLP 3*64*128 = 24,576 -> split
    #   36,864 (halved by tp); norms 2*64 = 128 (replicated).
    # stage 0: 2*(18,432 + 128) + embedding 256*64 = 53,504 parameters
    # stage 1: 37,120 + final norm 64 + head 16,384 = 53,568
    plan = plan_of(small)
    s0, s1 = plan.stages
    assert (s0.parameters, s1.parameters) == (53_504, 53_568)
    # float32 weights and gradients, AdamW m+v float32 sharded over dp=2 (zero1)
    assert s0.weights == s0.gradients == 53_504 * 4
    assert s0.optimizer == 53_504 * 8 / 2
    # activations per token and layer, sequence parallel + selective recompute, elements:
    #   norms 4h/t = 128; (q + wo input 2*a*d = 128, k + v 2*kv*d = 64, MLP 4f = 512) / t = 352
    # -> 480 elements x 2 bytes x (micro-batch 8/4 = 2 sequences x 32 tokens = 64 tokens)
    per_layer = 480 * 2 * 64
    assert s0.in_flight == 2 and s1.in_flight == 1  # 1F1B: stage 0 holds p micro-batches
    assert s0.activations == 2 * 2 * per_layer
    assert s1.activations == 1 * 2 * per_layer
    assert s1.logits == 64 * 256 * (2 + 4)  # bf16 logits + float32 softmax, last stage only
    assert s0.working == 36_864 / 2 * 2  # one layer's tensor-split weights cast to bf16
    # HCCL: 2 x 200 MB per group; world, tensor, data, one pipeline neighbour
    assert s0.comm_buffers == 4 * 400e6
    assert s0.reserve == 2 * GiB
    assert plan.memory is s0 and plan.fits


def test_small_plan_communication_by_hand(small):
    plan = plan_of(small)
    lines = {c.dimension: c for c in plan.comm}
    assert set(lines) == {"tensor", "pipeline", "data"}
    act = 64 * 64 * 2  # tokens per micro-batch x hidden x bf16 = 8,192 bytes
    # tensor: 4 collectives a layer x 2 layers, each sends 2(t-1)/t x act, x 4 micro-batches
    assert lines["tensor"].bytes_per_step == 8 * 2 * (1 / 2) * act * 4
    # pipeline: activations forward + gradients back, sequence-split by t, per micro-batch
    assert lines["pipeline"].bytes_per_step == 2 * act / 2 * 4
    # data, zero1: reduce-scatter float32 gradients + all-gather float32 weights of the fuller
    # stage (53,568 parameters): (d-1)/d x (4 + 4) bytes each
    assert lines["data"].bytes_per_step == 0.5 * 53_568 * 8
    # 8 devices fit one 910B server: all HCCS; a group of 2 uses one 28 GB/s mesh link
    assert all(c.intra and c.bandwidth == 28e9 for c in plan.comm)
    assert lines["tensor"].exposed_s == pytest.approx(lines["tensor"].seconds)


def test_small_plan_time_by_hand(small):
    plan = plan_of(small)
    e = plan.estimate
    assert e.bubble == pytest.approx(1 / 5)  # (p-1)/(m+p-1), p=2, m=4
    # last stage per token: matmuls 2 layers x 6 x 36,864 / 2 + head 6 x 256 x 64 = 319,488
    # attention scores 2 layers x (3 + 1 recomputed) x 4*a*d*s (8,192) / 2 = 32,768
    compute = 64 * (319_488 / (354e12 * 0.91) + 32_768 / (354e12 * 0.55))
    assert e.compute_s == pytest.approx(compute)
    micro = e.compute_s + e.memory_s + e.tensor_s + e.pipeline_s
    assert e.micro_batch_s == pytest.approx(micro)
    assert e.step_s == pytest.approx(5 * micro + e.optimizer_s + e.data_exposed_s)
    assert e.tokens_per_s_per_device == pytest.approx(2 * 8 * 32 / e.step_s / 8)


def test_recompute_and_sequence_parallel_change_activations(small):
    sel = plan_of(small).stages[0].activations
    none = plan_of(small, "parallel.recompute=none").stages[0].activations
    full = plan_of(small, "parallel.recompute=full").stages[0].activations
    no_sp = plan_of(small, "parallel.sequence_parallel=false").stages[0].activations
    per_token_layer = 64 * 2 * 2 * 2  # tokens x bytes x layers x in flight
    assert none - sel == pytest.approx(4 * 32 / 2 * per_token_layer)  # + a*s/t scores
    assert full == pytest.approx((64 / 2) * per_token_layer + 480 * 64 * 2)  # inputs + 1 layer
    assert no_sp - sel == pytest.approx((4 * 64 - 4 * 64 / 2) * per_token_layer)


def test_zero_levels_shard_what_they_say(small):
    by = {z: plan_of(small, f"parallel.optimizer_shard={z}").stages[0]
          for z in ("none", "zero1", "zero2", "zero3")}
    full = 53_504 * 4
    assert [by[z].optimizer for z in by] == [2 * full, full, full, full]
    assert [by[z].gradients for z in by] == [full, full, full / 2, full / 2]
    assert [by[z].weights for z in by] == [full, full, full, full / 2]


def test_group_outside_one_node_uses_the_inter_node_link(small):
    plan = plan_of(small, "cluster.devices_per_node=4")
    lines = {c.dimension: c for c in plan.comm}
    assert lines["tensor"].intra and not lines["pipeline"].intra  # stage 1 is on node 2
    assert lines["pipeline"].bandwidth == 25e9 and "RoCE" in lines["pipeline"].link


def test_impossible_plan_lists_every_reason_exit_1(small):
    args = ("plan", str(small), "--set", "parallel.tensor=3", "--set", "parallel.pipeline=3",
            "--set", "model.hidden_size=6144", "--set", "model.num_heads=32",
            "--set", "model.num_kv_heads=32", "--set", "model.intermediate_size=65536",
            "--set", "model.num_layers=100")
    res = run_cli(*args)
    assert res.returncode == 1, res.stderr
    out = res.stdout
    expected = ["tensor=3 does not divide model.num_heads=32",
                "tensor=3 does not divide model.num_kv_heads=32",
                "tensor=3 does not divide model.intermediate_size=65536",
                "pipeline=3 does not divide model.num_layers=100",
                "tensor=3 does not divide train.seq_len=32",  # sequence parallel splits it
                "memory: pipeline stage 0 needs"]
    assert "fits: NO (6 reason(s))" in out
    for needle in expected:
        assert needle in out, needle
    assert "over by" in out and "--set parallel.tensor=3" in out  # where each value came from
    res_json = run_cli(*args, "--json")
    assert res_json.returncode == 1
    data = json.loads(res_json.stdout)
    assert data["fits"] is False and len(data["reasons"]) == 6
    for needle in expected:
        assert any(needle in r for r in data["reasons"]), needle
    assert data["memory"]["fullest_stage"]["total_bytes"] > data["memory"]["limit_bytes"]


def test_every_parallel_reason_at_once(small):
    plan = plan_of(small, "parallel.tensor=3", "parallel.pipeline=3", "parallel.micro_batches=3",
                   "parallel.optimizer_shard=zero1", "parallel.data_parallel=1",
                   "cluster.devices=7")
    text = "\n".join(plan.reasons)
    for needle in ("does not divide model.num_heads", "does not divide model.num_kv_heads",
                   "does not divide model.intermediate_size", "does not divide model.num_layers",
                   "micro_batches=3 does not divide train.batch_size=8",
                   "needs data_parallel > 1", "devices=7 but"):
        assert needle in text, needle
    assert not plan.fits


def test_side_by_side_ratio(small):
    res = run_cli("plan", str(small), "--hardware", "910B,H100", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    a, b = (p["estimate"]["tokens_per_s_per_device"] for p in data["plans"])
    assert data["throughput_ratio"]["nvidia-h100-sxm"] == pytest.approx(b / a)
    assert data["throughput_ratio"]["ascend-910b2"] == 1.0
    text = run_cli("plan", str(small), "--hardware", "910B,H100").stdout
    assert "throughput vs Ascend 910B2" in text and f"{b / a:.2f}x" in text


def test_user_errors_exit_2_with_one_line(small):
    res = run_cli("plan", str(small), "--hardware", "tpu")
    assert res.returncode == 2 and res.stderr.startswith("error: unknown hardware 'tpu'")
    res = run_cli("plan", str(small), "--hardware", "910B,910B", "--json")  # one ratio per profile
    assert res.returncode == 2 and "names ascend-910b2 twice" in res.stderr and not res.stdout
    assert "error: --hardware 910B,910B:" in res.stderr
    res = run_cli("plan", str(small), "--set", "cluster.hardware=H100,H100")  # the recipe's key
    assert res.returncode == 2 and "error: cluster.hardware 'H100,H100': names" in res.stderr
    res = run_cli("plan", str(small), "--set", "model.hiden_size=3")
    assert res.returncode == 2 and "did you mean 'hidden_size'" in res.stderr.lower()
    res = run_cli("plan", str(small), "--hardware", "cpu")  # bf16 has no CPU peak
    assert res.returncode == 2 and "bfloat16" in res.stderr and "Traceback" not in res.stderr


def test_devices_scales_data_parallel(small):
    res = run_cli("plan", str(small), "--devices", "16", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["layout"]["data_parallel"] == 4
    res = run_cli("plan", str(small), "--devices", "6")
    assert res.returncode == 1 and "--devices 6" in res.stdout


def test_profiles_carry_sources_and_aliases():
    for name, profile in PROFILES.items():
        for figure in ("peak", "hbm", "intra", "inter", "scale_up", "gemm_efficiency",
                       "attention_efficiency", "comm_buffer", "runtime_reserve"):
            assert profile.sources.get(figure), (name, figure)
    assert lookup_profile("910B").name == "ascend-910b2"
    assert lookup_profile("Ascend 910C").scale_up == 384
    assert lookup_profile("H800").intra_bandwidth < lookup_profile("H100").intra_bandwidth
    cpu = lookup_profile("cpu")
    assert cpu.hbm_bytes > 1 * GiB and cpu.sources["peak"]


@pytest.mark.parametrize("path", ASCEND, ids=lambda p: p.name)
def test_every_ascend_recipe_plans_in_under_5s(path):
    start = time.perf_counter()
    res = run_cli("plan", str(path))
    elapsed = time.perf_counter() - start
    assert res.returncode == 0, res.stdout + res.stderr
    assert "fits: yes" in res.stdout and elapsed < 5.0, elapsed


def test_docs_comparison_is_the_planners_output():
    """docs/scale-out.md's published-figure table: every row's numbers are what the planner
    prints for its command (so the table is computed, not typed)."""
    import re
    import shlex

    rows = [line for line in (REPO / "docs" / "scale-out.md").read_text().splitlines()
            if line.startswith("|") and "`mindxh plan recipes/ascend/" in line]
    assert len(rows) >= 3
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        published = float(re.search(r"\(([\d,]+)\)\s*$", cells[0]).group(1).replace(",", ""))
        argv = shlex.split(cells[1].strip("`"))[2:]
        path, overrides = argv[0], [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        recipe, problems = load_for_plan(REPO / path, overrides)
        plan = make_plan(recipe, profile_for(recipe.cluster.hardware), problems)
        tps = plan.estimate.tokens_per_s_per_device
        assert cells[2] == f"{tps:,.0f}", row
        assert cells[3] == f"{tps / published:.2f}", row
    llama7b = [r for r in rows if "MindSpeed-LLM Llama2-7B" in r][0]
    assert abs(float(llama7b.strip("|").split("|")[3]) - 1) <= 0.25  # within 25%
