"""The tiny X1 pipeline end to end at toy size: every stage, the report with its intervals,
recorded stage inputs, resume by stage, and SFT's early stop (killed and resumed)."""
import json
from pathlib import Path

import pytest
from conftest import REPO, run_cli

TOY = [
    "tokenizer.train_documents=400", "train.max_steps=4", "train.log_every=2",
    "train.checkpoint_every=4", "sft.cold_start_examples=40", "sft.max_steps=4",
    "sft.batch_size=8", "sft.eval_every=2", "sft.eval_problems=8", "sft.stop_at_accuracy=0",
    "grpo.steps=2", "grpo.prompts_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=16",
    "grpo.eval_every=1", "grpo.eval_problems=4", "grpo.checkpoint_every=1", "grpo.micro_batch_rows=2",
    "evaluation.problems=8",
    "evaluation.batch_size=8", "evaluation.max_new_tokens=16",
    "pipeline.control_shuffled_rewards=true", "pipeline.control_more_sft=true",
]


def _sets(pairs):
    out = []
    for p in pairs:
        out += ["--set", p]
    return out


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("x1") / "run"
    proc = run_cli("pipeline", str(REPO / "recipes/tiny/x1.yaml"), "--output-dir", str(out),
                   *_sets(TOY), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_every_stage_runs_and_the_report_has_the_figures(toy_run):
    out, proc = toy_run
    report = json.loads((out / "report.json").read_text())
    for key in ("sft_accuracy", "grpo_accuracy", "gain_points", "stage_wall_s", "controls"):
        assert key in report
    assert 0.0 <= report["sft_accuracy"] <= 1.0 and 0.0 <= report["grpo_accuracy"] <= 1.0
    assert set(report["stage_wall_s"]) == {"tokenizer", "pretrain", "sft", "grpo", "controls",
                                           "eval", "export"}
    assert set(report["controls"]) == {"shuffled_rewards", "more_sft"}
    md = (out / "report.md").read_text()
    assert "held-out accuracy" in md and "grpo.png" in md
    assert (out / "grpo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(report["export"]["file"]).stat().st_size > 0
    assert report["export"]["max_abs_diff"] <= 1e-4
    grpo = [json.loads(x) for x in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward_mean", "reward_std", "accuracy", "response_len"):
        assert key in grpo[-1]
    samples = (out / "eval" / "grpo_samples.jsonl").read_text().splitlines()
    assert len(samples) == 8 and "correct" in json.loads(samples[0])
    assert "held-out accuracy: SFT" in proc.stdout
    # intervals on the test set: Wilson per model, paired for the gain
    for key in ("sft_ci95", "grpo_ci95", "gain_ci95", "controls_ci95", "controls_gain_points"):
        assert report[key], key
    low, high = report["grpo_ci95"]
    assert 0.0 <= low <= report["grpo_accuracy"] <= high <= 1.0
    assert report["gain_ci95"][0] <= report["gain_points"] <= report["gain_ci95"][1]
    evaluated = json.loads((out / "stages" / "eval.json").read_text())
    assert [json.loads(x)["correct"] for x in samples] == [
        c == "1" for c in evaluated["correct"]["grpo"]]
    # every stage records the inputs it ran with; none is left "started"
    for stage in report["stage_wall_s"]:
        recorded = json.loads((out / "stages" / f"{stage}.json").read_text())
        assert recorded["inputs"] and len(recorded["fingerprint"]) == 16
        assert not (out / "stages" / f"{stage}.started.json").exists()
    sft = json.loads((out / "stages" / "sft.json").read_text())
    assert "sft.cold_start_examples" in sft["inputs"] and "stage pretrain" in sft["inputs"]
    judged = [json.loads(x) for x in (out / "sft" / "validation.jsonl").read_text().splitlines()]
    assert [j["step"] for j in judged] == [c["step"] for c in sft["curve"]] == [2, 4]


def test_a_rerun_skips_finished_stages_and_restart_redoes_them(toy_run):
    out, _ = toy_run
    before = json.loads((out / "report.json").read_text())
    again = run_cli("pipeline", str(REPO / "recipes/tiny/x1.yaml"), "--output-dir", str(out),
                    *_sets(TOY), timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("already done") == 7
    assert json.loads((out / "report.json").read_text())["stage_wall_s"] == before["stage_wall_s"]
    redo = run_cli("pipeline", str(REPO / "recipes/tiny/x1.yaml"), "--output-dir", str(out),
                   *_sets(TOY), "--restart-from", "export", timeout=300)
    assert redo.returncode == 0, redo.stderr[-2000:]
    assert redo.stderr.count("already done") == 6 and "stage export: done" in redo.stderr


def test_changed_inputs_are_refused_naming_the_key_and_the_stage_to_redo(toy_run):
    out, _ = toy_run
    proc = run_cli("pipeline", str(REPO / "recipes/tiny/x1.yaml"), "--output-dir", str(out),
                   *_sets(TOY + ["grpo.lr=1e-4"]), timeout=120)
    assert proc.returncode == 2
    assert "stage grpo ran with other inputs" in proc.stderr
    assert "grpo.lr: 5e-05 -> 0.0001" in proc.stderr and "--restart-from grpo" in proc.stderr


def test_grpo_resumed_from_its_checkpoint_matches_an_uninterrupted_run(toy_run, tmp_path):
    import mindspore as ms
    import numpy as np

    from mindxh.checkpoint.store import latest_checkpoint, load_checkpoint
    from mindxh.config import load_recipe
    from mindxh.pipeline.recipes import model_recipe, with_overrides
    from mindxh.rl.grpo import GRPOTrainer
    from mindxh.tasks.arith import heldout_problems
    from mindxh.tokenizer import Tokenizer

    out, _ = toy_run
    ms.set_context(mode=ms.GRAPH_MODE)
    tok = Tokenizer.load(out / "tokenizer.model")
    recipe = model_recipe(load_recipe(out / "recipe.yaml"), out / "tokenizer.model", tok.vocab_size)
    sft = out / json.loads((out / "stages" / "sft.json").read_text())["checkpoint"]  # relative
    val = heldout_problems(1, recipe.sft.level, 2)

    def run(steps, where, resume=False):
        r = with_overrides(recipe, {"grpo.steps": steps, "grpo.checkpoint_every": 1,
                                    "grpo.eval_every": 0})
        result = GRPOTrainer(r, tok, Path(sft), where, resume=resume).run(val)
        return result, load_checkpoint(latest_checkpoint(where))

    _, whole = run(3, tmp_path / "whole")
    first, _ = run(2, tmp_path / "split")
    second, resumed = run(3, tmp_path / "split", resume=True)
    assert resumed.step == whole.step == 3
    for name, value in whole.model.items():
        assert np.array_equal(value, resumed.model[name]), name
    for name, value in whole.optimizer.items():
        assert np.array_equal(value, resumed.optimizer[name]), name
    # the run's seconds add up over sessions (the pipeline's more-SFT control is sized by them),
    # and a resume with nothing left to train still reports the last validation accuracy
    assert second.wall_s > first.wall_s and second.accuracy is not None
    third, _ = run(3, tmp_path / "split", resume=True)
    assert third.steps == 3 and third.accuracy == second.accuracy
    assert third.wall_s >= resumed.state["train_s"] > first.wall_s


class _Killed(Exception):
    """Stands for a kill -9 in the middle of a stage."""


# -- SFT stops at the threshold, and a killed SFT stops at the same checkpoint -------------
def test_sft_stops_at_the_threshold_and_a_killed_run_resumes_to_the_same_checkpoint(
        toy_run, tmp_path, monkeypatch):
    import shutil

    import numpy as np

    from mindxh.checkpoint.store import complete_checkpoints, load_checkpoint
    from mindxh.config import load_recipe
    from mindxh.pipeline import sft as sft_stage
    from mindxh.pipeline.context import Context
    from mindxh.pipeline.recipes import with_overrides

    out, _ = toy_run
    pretrain = Context(load_recipe(out / "recipe.yaml"), out).load("pretrain")
    judged = []

    class FakeEvaluator:
        """Validation accuracy by step: 0.5 from step 6 on. With `kill_at`, the run dies once
        between writing that checkpoint and judging it."""

        kill_at = None

        def __init__(self, ctx):
            pass

        def accuracy(self, checkpoint, problems):
            step = int(Path(checkpoint).name.split("-")[-1])
            if step == FakeEvaluator.kill_at:
                FakeEvaluator.kill_at = None
                raise _Killed
            judged.append(step)
            return 0.5 if step >= 6 else 0.1

    monkeypatch.setattr(sft_stage, "Evaluator", FakeEvaluator)

    def context(where: Path) -> Context:
        recipe = with_overrides(load_recipe(out / "recipe.yaml"), {
            "output_dir": str(where), "sft.max_steps": 10, "sft.eval_every": 2,
            "sft.stop_at_accuracy": 0.45})
        where.mkdir(exist_ok=True)
        shutil.copy(out / "tokenizer.model", where / "tokenizer.model")
        ctx = Context(recipe, where)
        ctx.results["pretrain"] = pretrain
        return ctx

    whole = sft_stage.run_sft(context(tmp_path / "whole"))
    assert (whole.step, whole.steps_run, whole.val_accuracy) == (6, 6, 0.5)
    assert [c.step for c in whole.curve] == judged == [2, 4, 6]
    assert [s for s, _ in complete_checkpoints(tmp_path / "whole" / "sft")] == [2, 4, 6]  # stopped

    judged.clear()
    FakeEvaluator.kill_at = 4
    split = context(tmp_path / "split")
    with pytest.raises(_Killed):
        sft_stage.run_sft(split)
    assert judged == [2] and [s for s, _ in complete_checkpoints(tmp_path / "split" / "sft")] == [2, 4]
    resumed = sft_stage.run_sft(split)  # judges step 4 first, then trains 5-6 and stops
    assert judged == [2, 4, 6] and (resumed.step, resumed.steps_run) == (6, 6)
    assert [c.step for c in resumed.curve] == [2, 4, 6]
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a.step == b.step == 6
    for name, value in a.model.items():
        assert np.array_equal(value, b.model[name]), name
    for name, value in a.optimizer.items():
        assert np.array_equal(value, b.optimizer[name]), name

    judged.clear()  # killed after judging the kept checkpoint: nothing more to train or judge
    again = sft_stage.run_sft(split)
    assert judged == [] and again.checkpoint == resumed.checkpoint
    assert [s for s, _ in complete_checkpoints(tmp_path / "split" / "sft")] == [2, 4, 6]


def test_a_mixed_math_and_code_pipeline_routes_every_reward_by_task(tmp_path):
    """data.tasks: [math, code] end to end at toy size: both tasks in the cold-start set, in
    GRPO's batches (scored by their own judge) and in the test set, reported per task."""
    out = tmp_path / "mixed"
    toy = [s for s in TOY if not s.startswith("pipeline.control")]
    proc = run_cli("pipeline", str(REPO / "recipes/tiny/x1.yaml"), "--output-dir", str(out),
                   *_sets(toy + ["data.tasks=[math,code]", "sft.seq_len=144",
                                 "pipeline.stages=[tokenizer,pretrain,sft,grpo,eval]"]),
                   timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cold = [json.loads(x) for x in (out / "sft" / "cold_start.jsonl").read_text().splitlines()]
    assert sum("f(x)" in c["prompt"] for c in cold) == len(cold) // 2
    grpo = [json.loads(x) for x in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    steps = [g for g in grpo if "reward_mean" in g]
    assert steps and all("accuracy_math" in g and "accuracy_code" in g for g in steps)
    samples = [json.loads(x) for x in (out / "eval" / "grpo_samples.jsonl").read_text().splitlines()]
    assert [s["task"] for s in samples] == ["math"] * 8 + ["code"] * 8
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"] == ["math", "code"] and set(report["by_task"]) == {"math", "code"}
    for task, part in zip(("math", "code"), (samples[:8], samples[8:])):
        assert report["by_task"][task]["accuracy"]["grpo"] == sum(s["correct"] for s in part) / 8
    assert "By task" in (out / "report.md").read_text()


def test_a_pipeline_without_pretraining_starts_sft_from_initialised_weights(tmp_path):
    """The no-pretraining ablation: pipeline.stages without pretrain runs, SFT has no
    init_from, and the report has both accuracies; with train.init_from, SFT starts there."""
    out = tmp_path / "run"
    sets = [s for s in TOY if not s.startswith("pipeline.control")] + [
        "pipeline.stages=[tokenizer,sft,grpo,eval]", "grpo.steps=1"]
    proc = run_cli("pipeline", str(REPO / "recipes/tiny/x1.yaml"), "--output-dir", str(out),
                   *_sets(sets), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no pretrain stage" in proc.stderr and not (out / "pretrain").exists()
    import yaml

    assert yaml.safe_load((out / "sft" / "recipe.yaml").read_text())["train"]["init_from"] is None
    report = json.loads((out / "report.json").read_text())
    assert set(report["stage_wall_s"]) == {"tokenizer", "sft", "grpo", "eval"}
    assert 0.0 <= report["sft_accuracy"] <= 1.0 and 0.0 <= report["grpo_accuracy"] <= 1.0
    # without pretrain, train.init_from is SFT's starting point (a converted or earlier model)
    again = tmp_path / "from-init"
    sets = [s for s in sets if not s.startswith("pipeline.stages")] + [
        "pipeline.stages=[tokenizer,sft]", f"train.init_from={out / 'sft'}"]
    proc = run_cli("pipeline", str(REPO / "recipes/tiny/x1.yaml"), "--output-dir", str(again),
                   *_sets(sets), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"starting from train.init_from={out / 'sft'}" in proc.stderr
    assert yaml.safe_load((again / "sft" / "recipe.yaml").read_text())["train"]["init_from"] == \
        str(out / "sft")
