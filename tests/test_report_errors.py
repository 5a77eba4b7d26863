"""The report's first-error table and GRPO sample-accuracy summary, read from a small run
directory written here (eval samples, GRPO metrics): no pipeline, no training."""
from __future__ import annotations

import json

import pytest

from mindxh.data.synthetic import generate


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _record(problem, response):
    from mindxh.tasks.arith import is_correct
    from mindxh.tasks.format import format_ok

    return {"question": problem.question, "answer": problem.answer, "response": response,
            "correct": is_correct(response, problem.answer), "format_ok": format_ok(response),
            "finish_reason": "stop"}


def _arith_wrong(p):
    """The last step's result off by one (so is the answer)."""
    *head, last = p.steps
    lhs, c = last.split("=")
    wrong = int(c) + 1
    return f"<think>{' , '.join([*head, f'{lhs}={wrong}'])}</think><answer>{wrong}</answer>"


def _copy_wrong(p):
    """The first step starts from another value than the question's."""
    lhs, c = p.steps[0].split("=")
    a = int(lhs[:len(lhs) - len(lhs.lstrip("0123456789"))])
    op_b = lhs[len(str(a)):]
    return f"<think>{a + 1}{op_b}={c}</think><answer>{p.answer + 1}</answer>"


@pytest.fixture
def run_dir(tmp_path):
    """8 test problems; SFT: 2 right, 3 arith, 2 copy, 1 format; GRPO: 6 right, 2 arith;
    GRPO metrics for 25 steps (step 7 logged twice, as after a resume)."""
    problems = [generate(0, i, 2) for i in range(8)]
    sft = ([p.response() for p in problems[:2]] + [_arith_wrong(p) for p in problems[2:5]]
           + [_copy_wrong(p) for p in problems[5:7]] + ["<think>the answer is</think>"])
    grpo = [p.response() for p in problems[:6]] + [_arith_wrong(p) for p in problems[6:]]
    out = tmp_path / "run"
    _write_jsonl(out / "eval" / "sft_samples.jsonl", [_record(p, r) for p, r in zip(problems, sft)])
    _write_jsonl(out / "eval" / "grpo_samples.jsonl", [_record(p, r) for p, r in zip(problems, grpo)])
    rows = [{"step": 0, "val_accuracy": 0.5}]
    for step in range(1, 26):
        rows.append({"step": step, "reward_mean": 0.0, "accuracy": step / 100})
        if step == 7:
            rows.append({"step": 7, "reward_mean": 0.0, "accuracy": 0.99})  # a redone step: dropped
    rows[-1]["val_accuracy"] = 0.75
    _write_jsonl(out / "grpo" / "metrics.jsonl", rows)
    return out


def _ctx(out, accuracy):
    from mindxh.config import Recipe
    from mindxh.pipeline.context import Context
    from mindxh.pipeline.results import EvalResult

    results = {}
    if accuracy is not None:
        results["eval"] = EvalResult(problems=8, accuracy=accuracy)
    return Context(Recipe(), out, results)


def test_the_report_tables_the_first_errors_and_the_sample_accuracy(run_dir):
    from mindxh.pipeline import report

    ctx = _ctx(run_dir, {"sft": 0.25, "grpo": 0.75, "control_more_sft": 0.5})  # more_sft: no file
    data = report.build(ctx)
    assert data["first_errors"] == {
        "sft": {"copy": 2, "arith": 3, "format": 1, "answer": 0, "none": 0},
        "grpo": {"copy": 0, "arith": 2, "format": 0, "answer": 0, "none": 0}}
    mean = lambda xs: round(sum(xs) / len(xs), 4)  # noqa: E731
    first10 = mean([s / 100 if s != 7 else 0.99 for s in range(1, 11)])  # step 7: its rerun
    assert data["sample_accuracy"] == {"grpo": {
        "steps": 25, "first10": first10, "last10": mean([s / 100 for s in range(16, 26)]),
        "greedy_test": 0.75}}
    json.dumps(data)  # report.json can hold it

    md = report.markdown(ctx, data)
    assert "| first error | SFT | GRPO |" in md
    assert "| wrong answers | 6 of 8 | 2 of 8 |" in md
    assert "| arith (copied right, computed wrong) | 3 (50.0%) | 2 (100.0%) |" in md
    assert "| copy (" in md and "| 2 (33.3%) | 0 (0.0%) |" in md
    assert "none (no error found)" not in md  # an all-zero "none" row is left out
    assert f"| GRPO | 25 | {100 * first10:.1f}% | 20.5% | 75.0% |" in md


def test_the_shuffled_control_gets_its_row_and_models_default_to_the_files_there(run_dir):
    import shutil

    from mindxh.pipeline import report

    shutil.copytree(run_dir / "grpo", run_dir / "control_shuffled")
    shutil.copy(run_dir / "eval" / "grpo_samples.jsonl",
                run_dir / "eval" / "control_shuffled_rewards_samples.jsonl")
    data = report.build(_ctx(run_dir, None))  # no eval result: every samples file there
    assert list(data["first_errors"]) == ["sft", "grpo", "control_shuffled_rewards"]
    assert set(data["sample_accuracy"]) == {"grpo", "control_shuffled_rewards"}
    assert data["sample_accuracy"]["grpo"]["greedy_test"] is None
    md = report.markdown(_ctx(run_dir, None), data)
    assert "| first error | SFT | GRPO | control: shuffled rewards |" in md
    assert "| control: shuffled rewards | 25 |" in md


def test_a_grpo_folder_of_a_stage_left_out_is_not_reported_and_counts_span_the_tasks(run_dir):
    """A pipeline without `grpo` may find an earlier run's grpo/ folder (trained from another
    SFT checkpoint): not this run's. With two tasks the test set is problems x 2."""
    import dataclasses

    from mindxh.config import Recipe
    from mindxh.config.post_training import PipelineConfig
    from mindxh.pipeline import report
    from mindxh.pipeline.context import Context
    from mindxh.pipeline.results import EvalResult

    recipe = dataclasses.replace(Recipe(), pipeline=PipelineConfig(
        stages=["tokenizer", "pretrain", "sft", "eval"]))
    ctx = Context(recipe, run_dir, {"eval": EvalResult(problems=8, accuracy={"sft": 0.25})})
    assert report.build(ctx)["sample_accuracy"] == {}
    assert report.grpo_runs(["sft", "grpo"]) == {"grpo": "grpo"}
    ev = EvalResult(problems=4, accuracy={"sft": 0.25, "grpo": 0.75}, tasks=["math", "code"],
                    correct={"sft": "10000000", "grpo": "11101110"})
    ctx = Context(Recipe(), run_dir, {"eval": ev})
    data = report.build(ctx)
    md = report.markdown(ctx, data)
    assert data["eval_total"] == 8 and "of 8 |" in md and "of 4 |" not in md
    assert "paired over the 8 test problems" in md


def test_a_run_without_those_files_has_no_such_tables(tmp_path, run_dir):
    from mindxh.pipeline import report

    empty = tmp_path / "old_run"
    empty.mkdir()
    data = report.build(_ctx(empty, {"sft": 0.25, "grpo": 0.75}))
    assert data["first_errors"] == {} and data["sample_accuracy"] == {}
    md = report.markdown(_ctx(empty, {"sft": 0.25, "grpo": 0.75}), data)
    assert "First error" not in md and "sample accuracy" not in md

    # a metrics file cut short by a kill, and samples of other problems, are left out too
    (run_dir / "grpo" / "metrics.jsonl").write_text('{"step": 1, "accuracy": 0.5}\n{"step": 2, "acc')
    _write_jsonl(run_dir / "eval" / "grpo_samples.jsonl",
                 [{"question": "What is 2+2?", "answer": 4, "response": "5", "correct": False}])
    data = report.build(_ctx(run_dir, {"sft": 0.25, "grpo": 0.75}))
    assert list(data["first_errors"]) == ["sft"] and data["sample_accuracy"] == {}


def test_the_runner_writes_both_into_report_json_and_md(tmp_path, monkeypatch, run_dir):
    import shutil

    from mindxh.config import Recipe
    from mindxh.pipeline import runner
    from mindxh.pipeline.results import EvalResult, PolicyResult

    out = tmp_path / "piped"
    result = EvalResult(problems=8, accuracy={"sft": 0.25, "grpo": 0.75},
                        correct={"sft": "11000000", "grpo": "11111100"})

    def fake_grpo(ctx):  # writes what GRPO would leave
        shutil.copytree(run_dir / "grpo", ctx.out / "grpo", dirs_exist_ok=True)
        return PolicyResult(checkpoint=str(ctx.out / "grpo"), steps=25, val_accuracy=None,
                            train_s=1.0, metrics=str(ctx.out / "grpo" / "metrics.jsonl"))

    def fake_eval(ctx):  # writes what the eval stage would leave
        shutil.copytree(run_dir / "eval", ctx.out / "eval", dirs_exist_ok=True)
        return result

    monkeypatch.setattr(runner, "STAGE_FUNCTIONS", {"grpo": fake_grpo, "eval": fake_eval})
    # these stages alone, fed by hand: the real runner refuses them without sft and tokenizer
    monkeypatch.setattr(runner, "_check_prerequisites", lambda ctx, order: None)
    recipe = Recipe(output_dir=str(out))
    recipe.pipeline.stages = ["grpo", "eval"]
    runner.run_pipeline(recipe)
    saved = json.loads((out / "report.json").read_text())
    assert saved["first_errors"]["grpo"]["arith"] == 2
    assert saved["sample_accuracy"]["grpo"]["steps"] == 25
    md = (out / "report.md").read_text()
    assert "First error of each wrong greedy test answer" in md and "| GRPO | 25 |" in md
