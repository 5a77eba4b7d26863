"""The pipeline without training: typed stage results, the report and its confidence
intervals, re-runs decided by recorded inputs (kept, refused or redone), the held-out sets
and the multi-seed study table. Fast: every stage here is a stand-in."""
import json
import re
from pathlib import Path

import pytest
from conftest import REPO


# -- the typed pipeline, without training -----------------------------------------------
def _results():
    from mindxh.pipeline.results import (
        ControlsResult,
        CurvePoint,
        EvalResult,
        ExportResult,
        MoreSFTResult,
        PolicyResult,
        PretrainResult,
        SFTResult,
        TokenizerResult,
    )

    policy = PolicyResult(checkpoint="grpo/ck", steps=2, val_accuracy=0.5, train_s=3.0, metrics="m")
    return {
        "tokenizer": TokenizerResult(path="tok.model", vocab_size=512, sha256="ab"),
        "pretrain": PretrainResult(checkpoint="pre/ck", steps=4, loss=2.5, eval_loss=None,
                                   tokens_per_s=100.0),
        "sft": SFTResult(checkpoint="sft/ck", step=2, val_accuracy=0.25,
                         curve=[CurvePoint(2, 0.25), CurvePoint(4, 0.125)], train_s=2.0,
                         steps_run=4, step_s=0.5, data="sft/data", examples=40),
        "grpo": policy,
        "controls": ControlsResult(shuffled_rewards=policy,
                                   more_sft=MoreSFTResult(checkpoint="more/ck", steps=6, train_s=3.0)),
        "eval": EvalResult(problems=8, accuracy={"sft": 0.25, "grpo": 0.5,
                                                 "control_shuffled_rewards": 0.125,
                                                 "control_more_sft": 0.375},
                           correct={"sft": "11000000", "grpo": "11110000",
                                    "control_shuffled_rewards": "00100000",
                                    "control_more_sft": "11100000"}),
        "export": ExportResult(skipped="pipeline.export_format is none"),
    }


def test_the_stage_table_is_the_recipes_stage_list():
    from mindxh.config.post_training import STAGES
    from mindxh.pipeline.results import RESULT_TYPES
    from mindxh.pipeline.stages import STAGE_FUNCTIONS

    assert tuple(STAGE_FUNCTIONS) == STAGES
    assert tuple(RESULT_TYPES) == STAGES


@pytest.mark.parametrize("stage", list(_results()))
def test_a_stage_result_round_trips_through_its_json_file(tmp_path, stage):
    import dataclasses

    from mindxh.config import Recipe
    from mindxh.pipeline.context import Context, _with_paths

    result = dataclasses.replace(_results()[stage], wall_s=1.5)  # its paths are relative
    Context(Recipe(), tmp_path).save(stage, result)
    path = tmp_path / "stages" / f"{stage}.json"
    assert json.loads(path.read_text()) == dataclasses.asdict(result)
    again = Context(Recipe(), tmp_path).load(stage)  # paths resolved in the run's directory
    assert again == _with_paths(result, lambda p: str(tmp_path / p))
    assert type(again) is type(result)


def test_a_moved_run_reads_its_own_files_and_an_outside_path_is_refused(tmp_path):
    """Results keep paths relative to the run, so a moved or copied run directory never reads
    the checkpoints of the run it came from; an absolute path outside the run (a result
    written before paths were relative) is an error naming the stage to redo."""
    import dataclasses
    import shutil

    from mindxh.config import Recipe
    from mindxh.pipeline.context import Context, PipelineError
    from mindxh.pipeline.results import PretrainResult

    first = tmp_path / "first"
    result = PretrainResult(checkpoint=str(first / "pretrain" / "ck"), steps=4, loss=2.5,
                            eval_loss=None, tokens_per_s=100.0)
    Context(Recipe(), first).save("pretrain", result)
    assert json.loads((first / "stages" / "pretrain.json").read_text())["checkpoint"] == "pretrain/ck"
    shutil.move(first, tmp_path / "moved")
    moved = Context(Recipe(), tmp_path / "moved").load("pretrain")
    assert moved.checkpoint == str(tmp_path / "moved" / "pretrain" / "ck")
    old = tmp_path / "old"
    (old / "stages").mkdir(parents=True)
    (old / "stages" / "pretrain.json").write_text(json.dumps(dataclasses.asdict(result)))
    with pytest.raises(PipelineError, match="outside this run's directory.*--restart-from pretrain"):
        Context(Recipe(), old).load("pretrain")


_SFT_JSON = json.dumps({"checkpoint": "x", "step": 2, "val_accuracy": 0.5, "curve": [],
                        "train_s": 1.0, "steps_run": 2, "step_s": 0.5, "data": "d", "examples": 4})


@pytest.mark.parametrize("text, why", [
    ("{not json", "Expecting property name"),
    ('{"checkpoint": "x"}', "missing keys"),
    (_SFT_JSON.replace("}", ', "old_key": 1}'), "unknown keys ['old_key']"),
    (_SFT_JSON.replace('"curve": []', '"curve": [{"step": "2", "val_accuracy": 0.5}]'), "curve[0].step"),
    ("[]", "expected an object"),
])
def test_a_stale_or_corrupted_stage_file_is_an_error_naming_it(tmp_path, text, why):
    from mindxh.config import Recipe
    from mindxh.pipeline.context import Context, PipelineError
    from mindxh.pipeline.results import SFTResult, from_dict

    assert from_dict(SFTResult, json.loads(_SFT_JSON)).step == 2  # the unspoilt file is fine
    path = tmp_path / "stages" / "sft.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(PipelineError) as exc:
        Context(Recipe(), tmp_path).load("sft")
    assert str(path) in str(exc.value) and why in str(exc.value)
    assert "--restart-from sft" in str(exc.value)


def _flat(obj, prefix=""):
    import dataclasses

    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            out.update(_flat(getattr(obj, f.name), f"{prefix}{f.name}."))
        return out
    return {prefix[:-1]: obj}


def test_derive_sft_recipe_returns_a_new_recipe_with_the_sft_settings(tmp_path):
    import copy

    from mindxh.config import load_recipe
    from mindxh.config.schema import DatasetConfig
    from mindxh.pipeline.recipes import derive_sft_recipe, model_recipe

    loaded = load_recipe(REPO / "recipes/tiny/x1.yaml", ["train.log_every=7", "sft.eval_every=5",
                                                           "sft.lr=0.001"])
    base = model_recipe(loaded, tmp_path / "tok.model", 300)
    snapshot = copy.deepcopy(base)
    derived = derive_sft_recipe(base, tmp_path / "data", tmp_path / "init", tmp_path / "sft", 20)
    assert base == snapshot and derived is not base
    before, after = _flat(base), _flat(derived)
    changed = {k for k in before if before[k] != after[k]}
    s = base.sft
    expected = {"output_dir": str(tmp_path / "sft"), "data.source": "prepared",
                "data.datasets": [DatasetConfig(path=str(tmp_path / "data"), weight=1.0)],
                "train.init_from": str(tmp_path / "init"), "train.seq_len": s.seq_len,
                "train.batch_size": s.batch_size, "train.grad_accum": 1, "train.max_steps": 20,
                "train.eval_every": 0, "train.log_every": 5, "train.checkpoint_every": 5,
                "train.keep_last": 6, "optim.lr": s.lr, "optim.warmup_steps": min(s.warmup_steps, 20)}
    assert changed <= set(expected)
    assert {"output_dir", "data.source", "train.init_from", "train.max_steps", "optim.lr"} <= changed
    assert {k: after[k] for k in expected} == expected
    assert _flat(loaded)["model.vocab_size"] is None and after["model.vocab_size"] == 300

    more = derive_sft_recipe(base, tmp_path / "data", tmp_path / "init", tmp_path / "more", 9,
                             {"train.checkpoint_every": 9, "train.keep_last": 1,
                              "optim.warmup_steps": 0})
    assert (more.train.max_steps, more.train.checkpoint_every, more.train.keep_last,
            more.optim.warmup_steps) == (9, 9, 1, 0)
    assert base == snapshot


def test_the_runner_builds_the_report_from_typed_results_and_reloads_them(tmp_path, monkeypatch):
    from mindxh.config import Recipe
    from mindxh.pipeline import runner

    results = _results()
    calls = []

    def fake(stage):
        return lambda ctx: calls.append(stage) or results[stage]

    monkeypatch.setattr(runner, "STAGE_FUNCTIONS", {s: fake(s) for s in results})
    recipe = Recipe(output_dir=str(tmp_path / "run"))
    first = runner.run_pipeline(recipe)
    assert calls == list(results)
    assert first["sft_accuracy"] == 0.25 and first["grpo_accuracy"] == 0.5
    assert first["gain_points"] == 25.0 and first["eval_problems"] == 8
    assert first["controls"] == {"shuffled_rewards": 0.125, "more_sft": 0.375}
    assert list(first["stage_wall_s"]) == list(results)
    assert first["sft"] == {"step": 2, "val_accuracy": 0.25, "examples": 40, "steps_run": 4,
                            "curve": [{"step": 2, "val_accuracy": 0.25},
                                      {"step": 4, "val_accuracy": 0.125}]}
    assert first["export"] == {"skipped": "pipeline.export_format is none",
                               "wall_s": first["stage_wall_s"]["export"]}
    md = (tmp_path / "run" / "report.md").read_text()
    assert "GRPO gain over its SFT start: **+25.0 points** (95% CI -7.1 to +57.1" in md
    calls.clear()
    assert runner.run_pipeline(recipe) == first and calls == []
    runner.run_pipeline(recipe, restart_from="eval")
    assert calls == ["eval"]  # export reads the policy, not the evaluation: kept
    # a restart that fails leaves no report of the stages it removed
    failing = dict(runner.STAGE_FUNCTIONS, eval=lambda ctx: 1 / 0)
    monkeypatch.setattr(runner, "STAGE_FUNCTIONS", failing)
    with pytest.raises(ZeroDivisionError):
        runner.run_pipeline(recipe, restart_from="eval")
    assert not any((tmp_path / "run" / name).exists() for name in runner.REPORT_FILES)


@pytest.mark.parametrize("stages, needle", [
    ("[tokenizer, pretrain, grpo]", "stage 'grpo' needs stage(s) ['sft']"),
    ("[tokenizer, eval]", "stage 'eval' needs stage(s) ['sft']"),
    ("[grpo, sft]", "need the tokenizer"),
])
def test_missing_upstream_stages_are_refused_before_any_stage_runs(tmp_path, monkeypatch,
                                                                   stages, needle):
    from mindxh.config import load_recipe
    from mindxh.pipeline import runner
    from mindxh.pipeline.context import PipelineError

    calls = []
    monkeypatch.setattr(runner, "STAGE_FUNCTIONS",
                        {s: (lambda s: lambda ctx: calls.append(s))(s) for s in _results()})
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output_dir: {tmp_path / 'run'}\npipeline:\n  stages: {stages}\n")
    with pytest.raises(PipelineError, match=re.escape(needle)):
        runner.run_pipeline(load_recipe(recipe))
    assert calls == [] and not (tmp_path / "run" / "recipe.yaml").exists()


def test_the_report_gives_wilson_intervals_and_a_paired_interval_for_each_gain(tmp_path, monkeypatch):
    import numpy as np

    from mindxh.config import Recipe
    from mindxh.pipeline import runner

    results = _results()
    monkeypatch.setattr(runner, "STAGE_FUNCTIONS", {s: (lambda r: lambda ctx: r)(results[s])
                                                    for s in results})
    data = runner.run_pipeline(Recipe(output_dir=str(tmp_path / "run")))
    p, n, z = 0.5, 8, 1.959964  # GRPO: 4 of 8
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * np.sqrt(
        p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert np.allclose(data["grpo_ci95"], [centre - half, centre + half], atol=1e-4)
    diffs = np.array([0, 0, 1, 1, 0, 0, 0, 0])  # GRPO - SFT, problem by problem
    half = 100 * z * diffs.std(ddof=1) / np.sqrt(n)
    assert data["gain_points"] == 25.0
    assert np.allclose(data["gain_ci95"], [25.0 - half, 25.0 + half], atol=0.01)
    # the shuffled control is 12.5% both ways, but on other problems than SFT: the paired gain
    # is -12.5 with a wide interval, not a difference of two accuracies
    assert data["controls_gain_points"]["shuffled_rewards"]["points"] == -12.5
    assert data["controls_ci95"]["more_sft"][0] < 0.375 < data["controls_ci95"]["more_sft"][1]
    assert "Wilson" in data["ci_method"] and "paired" in data["ci_method"]


def test_wilson_and_paired_intervals_against_known_values():
    from mindxh.utils.stats import paired_difference, wilson

    assert wilson(0, 10)[0] == 0.0 and abs(wilson(0, 10)[1] - 0.2775) < 1e-4
    low, high = wilson(5, 10)
    assert abs(low - 0.2366) < 1e-4 and abs(high - 0.7634) < 1e-4
    assert paired_difference("1111", "1111") == (0.0, 0.0, 0.0)  # same answers: no doubt
    mean, low, high = paired_difference("1100", "0000")
    assert mean == 0.5 and abs(high - mean - 1.959964 * (1 / 3) ** 0.5 / 2) < 1e-9
    with pytest.raises(ValueError):
        paired_difference("10", "1")


def test_the_three_heldout_sets_are_disjoint():
    from mindxh.tasks.arith import GRPO_VALIDATION_STREAM, VALIDATION_STREAM, heldout_problems

    assert len({0, VALIDATION_STREAM, GRPO_VALIDATION_STREAM}) == 3
    for seed in (0, 1, 2):
        test = {p.question for p in heldout_problems(seed, 2, 500)}
        sft_val = {p.question for p in heldout_problems(seed + VALIDATION_STREAM, 2, 128)}
        grpo_val = {p.question for p in heldout_problems(seed + GRPO_VALIDATION_STREAM, 2, 128)}
        assert len(test) == 500 and len(sft_val) == len(grpo_val) == 128
        assert not (test & sft_val) and not (test & grpo_val) and not (sft_val & grpo_val)


# -- re-runs: recorded inputs decide what is kept, refused or redone ----------------------
class _Killed(Exception):
    """Stands for a kill -9 in the middle of a stage."""


def _fake_stages(results, calls, seen):
    """Stages that return canned results; SFT writes its cold-start set as the real one
    does (only if absent), and `seen` records whether it found one already there."""
    def make(stage):
        def run(ctx):
            calls.append(stage)
            if stage == "sft":
                jsonl = ctx.stage_dir("sft") / "cold_start.jsonl"
                seen.append(jsonl.exists())
                if not jsonl.exists():
                    jsonl.write_text("x\n" * ctx.recipe.sft.cold_start_examples)
            return results[stage]
        return run
    return {stage: make(stage) for stage in results}


def test_changed_inputs_redo_exactly_the_stages_that_depend_on_them(tmp_path, monkeypatch):
    from mindxh.config import Recipe
    from mindxh.pipeline import runner
    from mindxh.pipeline.context import PipelineError
    from mindxh.pipeline.recipes import with_overrides

    calls, seen = [], []
    monkeypatch.setattr(runner, "STAGE_FUNCTIONS", _fake_stages(_results(), calls, seen))
    run = tmp_path / "run"
    recipe = Recipe(output_dir=str(run))
    runner.run_pipeline(recipe)
    cold = run / "sft" / "cold_start.jsonl"
    assert len(cold.read_text().splitlines()) == 1000
    (run / "grpo").mkdir()
    (run / "grpo" / "step-final").write_text("a finished GRPO run")

    calls.clear()
    changed = with_overrides(recipe, {"sft.cold_start_examples": 40})
    with pytest.raises(PipelineError) as err:
        runner.run_pipeline(changed)
    msg = str(err.value)
    assert "stage sft ran with other inputs" in msg and "sft.cold_start_examples: 1000 -> 40" in msg
    assert "--restart-from sft (redoes sft, grpo, controls, eval, export from scratch)" in msg
    with pytest.raises(PipelineError, match="sft.cold_start_examples.*redoes only eval"):
        runner.run_pipeline(changed, restart_from="eval")  # it would keep a stale SFT
    assert calls == [] and cold.exists() and (run / "grpo" / "step-final").exists()

    runner.run_pipeline(changed, restart_from="sft")
    assert calls == ["sft", "grpo", "controls", "eval", "export"]
    assert seen[-1] is False and len(cold.read_text().splitlines()) == 40  # regenerated
    assert not (run / "grpo" / "step-final").exists()  # not "resumed" at its last step

    calls.clear()
    evaluated = with_overrides(changed, {"evaluation.problems": 100})
    with pytest.raises(PipelineError, match="evaluation.problems: 500 -> 100"):
        runner.run_pipeline(evaluated)
    runner.run_pipeline(evaluated, restart_from="eval")
    assert calls == ["eval"]
    calls.clear()
    runner.run_pipeline(with_overrides(evaluated, {"pipeline.note": "no stage reads this"}))
    assert calls == []


def test_an_interrupted_stage_resumes_only_with_the_same_inputs(tmp_path, monkeypatch):
    from mindxh.config import Recipe
    from mindxh.pipeline import runner
    from mindxh.pipeline.context import PipelineError
    from mindxh.pipeline.recipes import with_overrides

    calls, results = [], _results()
    stages = _fake_stages(results, calls, [])

    def grpo(ctx):  # killed after its first checkpoint, the first time
        calls.append("grpo")
        partial = ctx.stage_dir("grpo") / "checkpoint-1"
        if not partial.exists():
            partial.write_text("step 1")
            raise _Killed
        return results["grpo"]

    monkeypatch.setattr(runner, "STAGE_FUNCTIONS", {**stages, "grpo": grpo})
    run = tmp_path / "run"
    recipe = Recipe(output_dir=str(run))
    with pytest.raises(_Killed):
        runner.run_pipeline(recipe)
    assert (run / "stages" / "grpo.started.json").exists()
    assert not (run / "stages" / "grpo.json").exists()
    with pytest.raises(PipelineError, match=r"grpo\.started\.json\): grpo\.lr: 5e-05 -> 0\.0001"):
        runner.run_pipeline(with_overrides(recipe, {"grpo.lr": 1e-4}))
    calls.clear()
    runner.run_pipeline(recipe)  # same inputs: GRPO resumes from what it had written
    assert calls == ["grpo", "controls", "eval", "export"]
    assert (run / "grpo" / "checkpoint-1").exists()
    assert not (run / "stages" / "grpo.started.json").exists()

    other = tmp_path / "other"  # outputs that carry no record are never reused
    (other / "pretrain").mkdir(parents=True)
    with pytest.raises(PipelineError,
                       match="stage pretrain.*no inputs recorded.*--restart-from pretrain"):
        runner.run_pipeline(Recipe(output_dir=str(other)))


def test_the_study_table_has_every_seed_then_mean_std_min_max(tmp_path):
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("x1_study", REPO / "tools" / "x1_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)

    def report(seed, sft, grpo):
        return {"seed": seed, "sft_accuracy": sft, "grpo_accuracy": grpo,
                "gain_points": round(100 * (grpo - sft), 2), "sft_ci95": [sft - 0.04, sft + 0.04],
                "grpo_ci95": [grpo - 0.04, grpo + 0.04],
                "gain_ci95": [100 * (grpo - sft) - 5, 100 * (grpo - sft) + 5],
                "controls": {"shuffled_rewards": 0.1, "more_sft": 0.9},
                "controls_ci95": {"shuffled_rewards": [0.08, 0.13], "more_sft": [0.87, 0.92]},
                "sft": {"step": 300}, "stage_wall_s": {"sft": 100.0, "grpo": 200.0, "controls": 50.0}}

    rows = [report(0, 0.5, 0.7), report(1, 0.5, 0.6), report(2, 0.4, 0.43)]
    stats = study.summary(rows)
    assert stats["gain"]["n"] == 3 and abs(stats["gain"]["mean"] - 11.0) < 1e-9
    assert abs(stats["gain"]["std"] - np.std([20.0, 10.0, 3.0], ddof=1)) < 1e-9
    assert (stats["gain"]["min"], stats["gain"]["max"]) == (3.0, 20.0)
    assert stats["wall (s)"]["mean"] == 300.0  # controls excluded
    text = study.table(rows)
    for row in ("| 0 | 50.0 [46.0, 54.0] | 70.0 [66.0, 74.0] | +20.0 [15.0, 25.0] |",
                "| mean |", "| std |", "| min |", "| max |"):
        assert row in text, row
    assert "mean +11.0 points (std 8.5, min +3.0, max +20.0)" in text
    assert "paired 95% interval above zero in 2 of 3 seeds" in text


def test_the_ablation_table_compares_studies_seed_by_seed_against_the_first(tmp_path):
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("x1_study", REPO / "tools" / "x1_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)

    import yaml

    def write(name, grpo_by_seed, kl_beta=0.0, stages=("pretrain", "sft", "grpo", "export")):
        for seed, grpo in grpo_by_seed.items():
            (tmp_path / name / f"seed{seed}").mkdir(parents=True)
            (tmp_path / name / f"seed{seed}" / "report.json").write_text(json.dumps(
                {"seed": seed, "sft_accuracy": 0.5, "grpo_accuracy": grpo,
                 "gain_points": round(100 * (grpo - 0.5), 2),
                 "gain_ci95": [100 * (grpo - 0.5) - 5, 100 * (grpo - 0.5) + 5]}))
            (tmp_path / name / f"seed{seed}" / "eval").mkdir()
            right = round(10 * grpo)  # 10 test problems per seed, the first `right` solved
            (tmp_path / name / f"seed{seed}" / "eval" / "grpo_samples.jsonl").write_text("".join(
                json.dumps({"question": f"q{i}", "correct": i < right}) + "\n" for i in range(10)))
            (tmp_path / name / f"seed{seed}" / "recipe.yaml").write_text(yaml.safe_dump(
                {"seed": seed, "output_dir": f"{name}/seed{seed}",
                 "grpo": {"kl_beta": kl_beta, "steps": 80}, "pipeline": {"stages": list(stages)}}))
        return tmp_path / name

    base = write("base", {0: 0.70, 1: 0.66, 2: 0.60})
    kl = write("kl", {0: 0.72, 1: 0.60, 2: 0.60, 3: 0.9}, kl_beta=0.04,
               stages=("pretrain", "sft", "grpo"))
    text = study.compare([base, kl])
    assert "| baseline recipe (base) | 0, 1, 2 | 50.0 | 65.3 (5.0; 60.0, 70.0) |" in text
    # the variant is named by what its recorded recipe changes (stages and paths are not
    # variants); the seed only the ablation ran is in its row but not in the difference
    assert "| `grpo.kl_beta=0.04` (kl) | 0, 1, 2, 3 |" in text
    # paired by problem over seeds 0-2 (10 problems each): 7 vs 7 solved, 6 vs 7 (problem 6
    # lost), 6 vs 6; the interval is the pooled one, the per-seed range from the reports
    import numpy as np

    diffs = [0] * 10 + ([0] * 6 + [-1] + [0] * 3) + [0] * 10
    mean = 100 * np.mean(diffs)
    half = 100 * 1.959964 * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
    assert text.rstrip().endswith(f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]; "
                                  "per seed -6.0 to +2.0 |"), text
    assert "| baseline |" in text
    bare = write("bare", {0: 0.5}, stages=("grpo",))
    assert "| no pretrain stage, no sft stage (bare) | 0 |" in study.compare([base, bare])
    with pytest.raises(SystemExit, match="no finished seed"):
        study.compare([base, tmp_path / "empty"])


def test_sft_schedule_constant_holds_the_lr_and_eval_every_0_checks_at_the_end(tmp_path):
    from mindxh.config import load_recipe
    from mindxh.pipeline.recipes import derive_sft_recipe, model_recipe
    from mindxh.train.optim import lr_at

    base = model_recipe(load_recipe(REPO / "recipes/tiny/x1.yaml", ["sft.schedule=constant",
                                                                  "sft.eval_every=0"]),
                        tmp_path / "tok.model", 300)
    r = derive_sft_recipe(base, tmp_path / "data", tmp_path / "init", tmp_path / "sft", 600)
    assert r.optim.min_lr_ratio == 1.0 and r.train.checkpoint_every == 600
    assert lr_at(599, r.optim, 600) == lr_at(300, r.optim, 600) == base.sft.lr
    cosine = derive_sft_recipe(model_recipe(load_recipe(REPO / "recipes/tiny/x1.yaml"),
                                            tmp_path / "tok.model", 300),
                               tmp_path / "data", tmp_path / "init", tmp_path / "sft", 600)
    assert cosine.optim.min_lr_ratio == base.optim.min_lr_ratio < 1.0
    assert lr_at(599, cosine.optim, 600) < 0.2 * cosine.sft.lr


def test_sft_without_pretraining_reads_the_model_sections_and_the_tokenizer_itself():
    """Without a pretrain stage SFT starts from initialised weights, so a change to the model,
    the data or the tokenizer must make it stale; with pretraining, its inputs (and thus every
    recorded run's fingerprint) are what they were."""
    from mindxh.config import Recipe
    from mindxh.pipeline.inputs import fingerprint, stage_inputs

    r = Recipe()
    full = stage_inputs(r, ["tokenizer", "pretrain", "sft"])["sft"]
    assert not any(k.startswith("model.") for k in full) and "stage tokenizer" not in full
    alone = stage_inputs(r, ["tokenizer", "sft"])["sft"]
    assert alone["stage pretrain"] is None
    assert alone["stage tokenizer"] == fingerprint(stage_inputs(r, ["tokenizer"])["tokenizer"])
    assert alone["model.hidden_size"] == r.model.hidden_size and "seed" in alone
    wider = Recipe()
    wider.model.hidden_size *= 2
    assert fingerprint(stage_inputs(wider, ["tokenizer", "sft"])["sft"]) != fingerprint(alone)


def test_a_given_tokenizer_is_copied_into_the_run(tmp_path, tiny_tokenizer, json_tok_path):
    """tokenizer.path (a SentencePiece model, or a tokenizer.json with its config): the
    tokenizer stage copies it where every later stage reads it (before, the stages looked for
    OUT/tokenizer.model, which a given tokenizer never wrote)."""
    from mindxh.config import Recipe
    from mindxh.pipeline.context import Context
    from mindxh.pipeline.stages import run_tokenizer
    from mindxh.tokenizer import Tokenizer

    out = tmp_path / "run"
    out.mkdir()
    for source, name in ((tiny_tokenizer, "tokenizer.model"), (json_tok_path, "tokenizer.json"),
                         (tiny_tokenizer, "tokenizer.model")):  # and back: no stale JSON left
        recipe = Recipe()
        recipe.tokenizer.path = str(source)
        ctx = Context(recipe, out)
        result = run_tokenizer(ctx)
        assert ctx.tokenizer_path == out / name and result.path == str(out / name)
        assert (out / name).read_bytes() == Path(source).read_bytes()
        assert result.sha256 == Tokenizer.load(source).sha256 == Tokenizer.load(out / name).sha256
    assert not (out / "tokenizer.json").exists() and not (out / "tokenizer_config.json").exists()


def test_a_tokenizer_left_out_of_the_stages_is_an_input_by_its_file():
    """Stages run without the tokenizer stage read OUT's tokenizer file: retraining it in
    another invocation must make them stale (its sha256 stands in for the stage)."""
    from mindxh.config import Recipe
    from mindxh.pipeline.inputs import fingerprint, stage_inputs

    order = ["pretrain", "sft"]
    a = stage_inputs(Recipe(), order, {"tokenizer": "aaa"})
    b = stage_inputs(Recipe(), order, {"tokenizer": "bbb"})
    assert a["pretrain"]["stage tokenizer"] == "aaa"
    assert fingerprint(a["pretrain"]) != fingerprint(b["pretrain"])
    assert fingerprint(a["sft"]) != fingerprint(b["sft"])  # through pretrain's fingerprint
    assert stage_inputs(Recipe(), order)["pretrain"]["stage tokenizer"] is None
