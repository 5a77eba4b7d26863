"""The tiny X1 pipeline end to end at toy size: every stage, the report, resume by stage."""
import json
from pathlib import Path

import pytest
from conftest import REPO, run_cli

TOY = [
    "tokenizer.train_documents=400", "train.max_steps=4", "train.log_every=2",
    "train.checkpoint_every=4", "sft.cold_start_examples=40", "sft.max_steps=4",
    "sft.batch_size=8", "sft.eval_every=2", "sft.eval_problems=8", "sft.stop_at_accuracy=0",
    "grpo.steps=2", "grpo.prompts_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=16",
    "grpo.eval_every=1", "grpo.checkpoint_every=1", "evaluation.problems=8",
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


def test_a_different_recipe_in_the_same_directory_is_refused(toy_run):
    out, _ = toy_run
    proc = run_cli("pipeline", str(REPO / "recipes/tiny/x1.yaml"), "--output-dir", str(out),
                   *_sets(TOY + ["grpo.lr=1e-4"]), timeout=120)
    assert proc.returncode == 2
    assert "different recipe" in proc.stderr


def test_grpo_resumed_from_its_checkpoint_matches_an_uninterrupted_run(toy_run, tmp_path):
    import copy

    import mindspore as ms
    import numpy as np

    from mindxh.checkpoint.store import latest_checkpoint, load_checkpoint
    from mindxh.config import load_recipe
    from mindxh.rl.grpo import GRPOTrainer
    from mindxh.tasks.arith import heldout_problems
    from mindxh.tokenizer import Tokenizer

    out, _ = toy_run
    ms.set_context(mode=ms.GRAPH_MODE)
    recipe = load_recipe(out / "recipe.yaml")
    recipe.tokenizer.path = str(out / "tokenizer.model")
    tok = Tokenizer.load(recipe.tokenizer.path)
    recipe.model.vocab_size = tok.vocab_size
    sft = json.loads((out / "stages" / "sft.json").read_text())["checkpoint"]
    val = heldout_problems(1, recipe.sft.level, 2)

    def run(steps, where, resume=False):
        r = copy.deepcopy(recipe)
        r.grpo.steps, r.grpo.checkpoint_every, r.grpo.eval_every = steps, 1, 0
        GRPOTrainer(r, tok, Path(sft), where, resume=resume).run(val)
        return load_checkpoint(latest_checkpoint(where))

    whole = run(3, tmp_path / "whole")
    run(2, tmp_path / "split")
    resumed = run(3, tmp_path / "split", resume=True)
    assert resumed.step == whole.step == 3
    for name, value in whole.model.items():
        assert np.array_equal(value, resumed.model[name]), name
    for name, value in whole.optimizer.items():
        assert np.array_equal(value, resumed.optimizer[name]), name
