"""The benchmark harness's logic, fast: no framework is timed and nothing asserts a speed.

Performance goals live in the ratios `mindxh bench` prints (docs/performance.md), never in a
unit test: on a shared CPU a timing assertion only measures the neighbours. What is checked
here is what would silently corrupt a table: shapes, alternation, the reduction to medians,
ratios and MFU, failure reporting, and the rendering of every row kind.
"""
from __future__ import annotations

import argparse
import sys

import pytest

from mindxh.bench import harness, report, sections, spec
from mindxh.cli import bench_cmd


def test_configs_are_the_documented_shapes():
    assert [spec.CONFIGS[n].intermediate for n in ("tiny", "medium", "small")] == [352, 704, 1408]
    for s in spec.CONFIGS.values():
        spec.model_config(s).check()
        rows = spec.token_batches(s, count=2)
        assert rows[0].shape == (s.batch, s.seq + 1) and rows[0].min() >= 1 and rows[0].max() < spec.VOCAB
        assert (rows[0] == spec.token_batches(s, count=1)[0]).all()  # same data in every process
    tiny = spec.CONFIGS["tiny"]
    non_embedding = spec.parameter_count(tiny) - spec.VOCAB * tiny.hidden
    assert spec.flops_per_token(tiny) == 6 * non_embedding + 12 * 2 * 4 * 32 * 128


def test_alternate_runs_rounds_in_order_and_drops_a_failing_peer():
    calls = []

    def measure(peer, rnd):
        calls.append((peer, rnd))
        return {"error": "boom"} if peer == "B" and rnd == 1 else {"v": rnd}

    runs, errors = harness.alternate(["A", "B", "C"], 3, measure)
    assert calls == [("A", 0), ("B", 0), ("C", 0), ("A", 1), ("B", 1), ("C", 1), ("A", 2), ("C", 2)]
    assert errors == {"B": "boom"} and [r["v"] for r in runs["B"]] == [0] and len(runs["C"]) == 3


def test_spread_and_ratio():
    assert harness.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    assert harness.spread([])["median"] is None
    assert harness.ratio(3.0, 2.0) == 1.5 and harness.ratio(None, 2.0) is None


def test_child_process_result_and_failure(tmp_path):
    ok = harness.run_child("peak", {"size": 32, "repeats": 1}, log_file=tmp_path / "peak.log")
    assert ok["flops"] > 0 and ok["peak_rss_mb"] > 0 and (tmp_path / "peak.log").exists()
    # every GEMM library of the venv is probed; the peak is the fastest
    assert {"numpy", "mindspore"} <= set(ok["rates"]) and ok["flops"] == max(ok["rates"].values())
    bad = harness.run_child("no-such-job", {}, log_file=tmp_path / "bad.log")
    assert bad["error"].startswith("exit 1:") and "KeyError" in bad["error"]
    gone = harness.run_child("peak", {}, python=tmp_path / "missing-python")
    assert "could not start" in gone["error"]


def test_parse_result_takes_the_last_marked_line():
    out = "noise\nBENCH_RESULT {\"a\": 1}\nmore noise\nBENCH_RESULT {\"a\": 2}\ntrailer\n"
    assert harness.parse_result(out) == {"a": 2} and harness.parse_result("nothing") is None
    assert "ValueError: x" in harness.failure_reason(1, "Traceback\n  line\nValueError: x\n\n")
    assert "signal 9" in harness.failure_reason(-9, "")


def _fake_train_child(job, params, python=None, timeout=None, log_file=None, env=None):
    if job == "train-mindformers":
        return {"error": "exit 1: ModuleNotFoundError: No module named 'mindformers'"}
    step = {"mindxh": 0.2, "torch": 0.1}[job.split("-")[1]]
    return {"first_s": 5.0, "warmup_s": [5.0], "step_s": [step] * params["steps"],
            "loss_first": 6.0, "loss_last": 5.0, "framework": job, "peak_rss_mb": 100.0}


def _opts(**kw):
    base = dict(repeats=2, steps=3, pynative_steps=2, warmup=1, timeout=None, gen_new=[64], gen_batch=[1],
                recompute_cap=64, grpo_steps=2)
    return argparse.Namespace(**{**base, **kw})


def test_train_section_reduces_rounds_to_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(sections, "run_child", _fake_train_child)
    monkeypatch.setattr(sections, "_weights", lambda work, name, params: "w.safetensors")
    monkeypatch.setattr(sections, "MF_PYTHON", tmp_path / "python")
    (tmp_path / "python").touch()
    out = sections.train("tiny", ["mindxh-graph", "torch-eager", "mindformers"], _opts(), tmp_path)
    sections.set_mfu(out, 1e9)
    rows = {r["peer"]: r for r in out["rows"]}
    tokens = 8 * 128
    assert rows["mindxh-graph"]["tokens_per_s"] == pytest.approx(tokens / 0.2)
    assert rows["torch-eager"]["baseline_over_this"] == pytest.approx(0.5)
    assert rows["mindxh-graph"]["mfu"] == pytest.approx(tokens / 0.2 * out["flops_per_token"] / 1e9)
    assert rows["mindxh-graph"]["step_s"]["n"] == 6 and rows["mindxh-graph"]["rounds"] == 2
    assert rows["mindformers"]["rounds"] == 0 and "mindformers" in rows["mindformers"]["error"]
    monkeypatch.setattr(sections, "MF_PYTHON", tmp_path / "absent")
    out = sections.train("tiny", ["mindformers"], _opts(), tmp_path)
    assert out["rows"][0]["error"].startswith("not installed")


def test_agreement_of_greedy_tokens():
    a = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    assert sections._agreement(a, [list(a[0])])["first_tokens_agree"]
    late = sections._agreement(a, [[1, 2, 3, 4, 5, 6, 7, 8, 0, 0]])
    assert late["first_tokens_agree"] and late["token_agreement"] == 0.8
    short = sections._agreement(a, [[1, 2, 9]])  # recomputation timed over fewer steps
    assert not short["first_tokens_agree"] and short["compared"] == 3
    capped = sections._agreement(a, [[1, 2, 3, 4]])  # fewer tokens than the prefix, all equal
    assert capped["first_tokens_agree"] and capped["token_agreement"] == 1.0
    assert sections._agreement(None, a) is None


def _result(tmp_path, monkeypatch) -> dict:
    monkeypatch.setattr(sections, "run_child", _fake_train_child)
    monkeypatch.setattr(sections, "_weights", lambda work, name, params: "w")
    monkeypatch.setattr(sections, "MF_PYTHON", tmp_path / "python")
    (tmp_path / "python").touch()
    train = sections.train("tiny", ["mindxh-graph", "torch-eager", "mindformers"], _opts(), tmp_path)
    sections.set_mfu(train, 1e12)
    gen_row = {"batch": 1, "new_tokens": 64, "method": "mindxh-recompute", "error": None,
               "tokens_per_s": 40.0, "wall_s": harness.spread([1.6]), "timed_steps": 32,
               "first_call_s": 3.0, "cached_vs_this": 5.0,
               "agreement_with_cached": {"first_tokens_agree": True, "token_agreement": 1.0, "compared": 32}}
    failed = {**gen_row, "method": "hf-generate", "error": "exit 1: ImportError: torch",
              "tokens_per_s": None}
    cached = {**gen_row, "method": "mindxh-cached", "timed_steps": 64, "window": 16,
              "agreement_with_cached": None}
    return {"started": "now", "command": "mindxh bench", "machine": report.machine_info(),
            "load_start": [1, 1, 1], "load_end": [1, 1, 1], "wall_s": 60.0,
            "options": vars(_opts()), "train": [train],
            "generate": [{"config": "tiny", "shape": "s", "prompt_tokens": 32, "frameworks": {},
                          "rows": [cached, gen_row, failed]}],
            "grpo": {"error": "exit 1: boom"},
            "peak": {"flops": 1e9, "method": "numpy", "probes_gflops": [1.0, 0.9]}}


def test_markdown_renders_every_row_kind(tmp_path, monkeypatch):
    result = _result(tmp_path, monkeypatch)
    md = report.to_markdown(result)
    assert "| mindxh-graph | 5,120 | 200.0 |" in md and "| torch-eager | 10,240 |" in md
    assert "0.50x" in md and "ModuleNotFoundError" in md
    assert "mindxh-recompute (32 steps timed)" in md and "ImportError: torch" in md
    assert "| mindxh-cached (window 16) |" in md
    assert "GRPO step" in md and "boom" in md and "MFU above 100%" not in md
    sections.set_mfu(result["train"][0], 1e9)  # a probe under-read under load
    assert "MFU above 100%" in report.to_markdown(result)
    assert report.machine_info()["cores"] >= 1


def test_cli_options_are_validated(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    bench_cmd.register(parser.add_subparsers())
    opts = bench_cmd.options(parser.parse_args(["bench", "--configs", "tiny", "--gen-new", "64"]))
    assert opts.configs == ["tiny"] and opts.gen_new == [64] and opts.peers == list(spec.TRAIN_PEERS)
    (tmp_path / "afile").write_text("x")
    for bad in (["--configs", "huge"], ["--peers", "jax"], ["--only", "eval"], ["--repeats", "0"],
                ["--gen-batch", "x"], ["--timeout", "0"], ["--out", str(tmp_path / "afile")]):
        with pytest.raises(bench_cmd.BenchError):
            bench_cmd.options(parser.parse_args(["bench", *bad]))
    # the children run in the repository root: a relative --out is made absolute here
    monkeypatch.chdir(tmp_path)
    assert bench_cmd.options(parser.parse_args(["bench", "--out", "rel"])).out == str(tmp_path / "rel")


def test_tools_forward_to_the_cli(monkeypatch):
    seen = {}
    monkeypatch.setattr("mindxh.cli.main.main", lambda argv: seen.setdefault("argv", argv) and 0)
    import runpy

    monkeypatch.setattr(sys, "argv", ["bench_train_step.py", "--steps", "2"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(harness.REPO_ROOT / "tools" / "bench_train_step.py"), run_name="__main__")
    assert seen["argv"][0] == "bench" and seen["argv"][-2:] == ["--steps", "2"]


def test_the_fused_peer_is_graph_mode_with_graph_kernel_fusion():
    from mindxh.bench import sections, train_jobs

    job, params, python, env = sections._train_job("mindxh-graph-fused", {"config": "tiny"})
    assert (job, params["mode"], params["graph_kernel"], python) == ("train-mindxh", "graph", True, None)
    assert env == {"OMP_NUM_THREADS": "1"}  # set before the child imports MindSpore
    unfused = sections._train_job("mindxh-graph", {"config": "tiny"})
    assert unfused[1]["graph_kernel"] is False and unfused[3] == {}
    r = train_jobs._mindxh_recipe(spec.shape("tiny"), "graph", 3, params["graph_kernel"])
    assert r.compile.enable_graph_kernel and r.compile.mode == "graph"


def test_fused_generation_runs_with_the_fused_peer_in_the_fusing_environment(tmp_path, monkeypatch):
    assert sections._gen_methods(["mindxh-graph", "torch-eager"]) == [
        "mindxh-cached", "mindxh-recompute", "hf-generate"]
    assert sections._gen_methods(["mindxh-graph", "mindxh-graph-fused"]) == [
        "mindxh-cached", "mindxh-cached-fused", "mindxh-recompute"]
    calls = []

    def child(job, params, python, timeout, log, env=None):
        calls.append((params.get("method"), params.get("graph_kernel"), env))
        case = {"wall_s": 1.0, "first_s": 1.0, "timed_steps": 2, "tokens": [[1, 2]], "window": None}
        return {"cases": [case], "framework": "f"}

    monkeypatch.setattr(sections, "run_child", child)
    monkeypatch.setattr(sections, "_weights", lambda work, name, params: "w")
    opts = _opts()
    opts.gen_new, opts.gen_batch, opts.repeats = [2], [1], 1
    section = sections.generate("tiny", ["mindxh-graph", "mindxh-graph-fused"], opts, tmp_path)
    assert ("cached", True, {"OMP_NUM_THREADS": "1"}) in calls
    assert ("cached", False, {}) in calls and ("recompute", False, {}) in calls
    assert [r["method"] for r in section["rows"]] == ["mindxh-cached", "mindxh-cached-fused",
                                                      "mindxh-recompute"]


def test_grpo_section_takes_medians_after_the_compiling_step_and_names_the_update(tmp_path, monkeypatch):
    def child(job, params, python=None, timeout=None, log_file=None, env=None):
        assert job == "grpo" and params["steps"] == 3
        steps = [{"step": i + 1, "sample_s": s, "reward_s": 0.01, "update_s": u, "response_len": 40.0,
                  "groups_used": 16} for i, (s, u) in enumerate([(5.0, 9.0), (1.0, 1.5), (1.2, 1.3)])]
        return {"steps": steps, "tokenizer_s": 1.0, "run_s": 20.0, "rollouts_per_step": 128,
                "max_new_tokens": 48, "micro_batch_rows": 32, "recipe_steps": 80, "peak_rss_mb": 2500.0}

    monkeypatch.setattr(sections, "run_child", child)
    opts = _opts(grpo_steps=3, grpo_recipe=harness.REPO_ROOT / "recipes/tiny/x1.yaml")
    g = sections.grpo(opts, tmp_path)
    assert g["phases_median_s"] == {"sample_s": pytest.approx(1.1), "reward_s": pytest.approx(0.01),
                                    "update_s": pytest.approx(1.4)}
    assert g["first_step_s"] == pytest.approx(14.01) and g["timed_steps"] == 2
    assert g["projected_stage_s"] == pytest.approx(80 * 2.51)
    md = "\n".join(report._grpo_md(g))
    assert "| update | 1.4000 |" in md and "in micro-batches of 32 rows" in md
    assert "skip_uniform_groups=false" in md
    assert "the whole batch in one pass" in "\n".join(report._grpo_md({**g, "micro_batch_rows": 0}))
