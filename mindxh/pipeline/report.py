"""report.json, report.md and the GRPO plot of a pipeline run.

The report reads the stages' typed results; its keys and text are what the README and
tools/x1_study.py quote, so they change only together with those. Every accuracy is on the
test problems and comes with a 95% interval (Wilson); every gain over SFT with a paired
one over the same problems (stats.py), so a difference within noise reads as such.

Two more reads of files the stages leave: the first error of each wrong greedy test answer
(OUT/eval/<model>_samples.jsonl, classified by mindxh.tasks.arith_errors), and GRPO's
temperature-1 sample accuracy on each step's fresh problems (OUT/grpo/metrics.jsonl, and the
shuffled-rewards control's), early and late, beside the greedy test accuracy. A run without
those files (an older one) just has no such table.
"""
from __future__ import annotations

import dataclasses
import io
import logging
from pathlib import Path

from mindxh.pipeline.context import Context
from mindxh.pipeline.results import EvalResult, ExportResult, SFTResult
from mindxh.tasks.arith_errors import CATEGORIES, error_table
from mindxh.tasks.code import CODE_ERRORS, code_error_table
from mindxh.utils.fsio import atomic_write, read_jsonl
from mindxh.utils.stats import paired_difference, wilson

__all__ = ["build", "first_errors", "markdown", "plot", "sample_accuracy"]

log = logging.getLogger(__name__)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _export_summary(e: ExportResult) -> dict:
    """The export's fields that apply: the file and its check, or why it was skipped."""
    return {k: v for k, v in dataclasses.asdict(e).items()
            if v is not None and k not in ("inputs", "fingerprint")}


CI_METHOD = ("95% intervals: Wilson score for accuracies; for gains over SFT, paired over the "
             "same test problems: mean +- 1.96 sd / sqrt(n) of the per-problem differences")


def _intervals(correct: dict[str, str]) -> tuple[dict, dict]:
    """(model -> [low, high] accuracy, model -> {points, ci95 [low, high]} gain over SFT)."""
    acc = {name: [round(x, 4) for x in wilson(bits.count("1"), len(bits))]
           for name, bits in correct.items() if bits}
    gains = {}
    sft = correct.get("sft", "")
    for name, bits in correct.items():
        if name != "sft" and len(sft) >= 2 and len(bits) == len(sft):
            mean, low, high = paired_difference(bits, sft)
            gains[name] = {"points": round(100 * mean, 2),
                           "ci95": [round(100 * low, 2), round(100 * high, 2)]}
    return acc, gains


# GRPO runs whose metrics.jsonl has a per-step sample accuracy:
# eval model name -> (folder, the stage that writes it, plot label)
GRPO_RUNS = {"grpo": ("grpo", "grpo", "GRPO"),
             "control_shuffled_rewards": ("control_shuffled", "controls", "shuffled rewards")}
SAMPLE_WINDOW = 10  # steps averaged at the start and at the end of a GRPO run


def first_errors(out: Path, models: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Model -> first-error category -> count, over its wrong greedy test answers.

    `models`: the evaluated models, in order (default: every OUT/eval/*_samples.jsonl); a model
    whose records are missing or are not synthetic arithmetic problems is left out."""
    folder = out / "eval"
    if models is None:
        models = sorted(p.name[: -len("_samples.jsonl")] for p in folder.glob("*_samples.jsonl"))
    first = ("sft", "grpo")  # then the controls, as given
    table = {}
    for name in sorted(models, key=lambda m: first.index(m) if m in first else len(first)):
        path = folder / f"{name}_samples.jsonl"
        if not path.exists():
            continue
        try:
            records = read_jsonl(path)
            math = [r for r in records if r.get("task", "math") == "math"]
            code = [r for r in records if r.get("task") == "code"]
            table[name] = {**(error_table(math) if math else {}),
                           **(code_error_table(code) if code else {})}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("no first-error table for %s: %s (%s)", name, path, exc)
    return table


def _steps(path: Path) -> list[dict]:
    """The per-step records of a GRPO metrics.jsonl (the last one of a step a resume redid)."""
    try:
        rows = _series(path)
    except ValueError as exc:  # a line cut short by a kill
        log.warning("unreadable %s: %s", path, exc)
        return []
    by_step = {r["step"]: r for r in rows if "accuracy" in r and "step" in r}
    return [by_step[s] for s in sorted(by_step)]


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / len(xs), 4)


def grpo_runs(stages) -> dict[str, str]:
    """The GRPO runs (name -> folder) of a pipeline with `stages`: a folder of a stage left
    out is an earlier run's, trained from another SFT checkpoint, and not reported."""
    return {name: folder for name, (folder, stage, _) in GRPO_RUNS.items() if stage in stages}


def sample_accuracy(out: Path, greedy: dict[str, float] | None = None,
                    stages=tuple(stage for _, stage, _ in GRPO_RUNS.values())) -> dict[str, dict]:
    """GRPO run -> {steps, first10, last10, greedy_test}: its temperature-1 accuracy on each
    step's fresh training problems, averaged over the first and the last SAMPLE_WINDOW steps,
    beside the model's greedy test accuracy (`greedy`, None if not evaluated)."""
    data = {}
    for name, folder in grpo_runs(stages).items():
        steps = _steps(out / folder / "metrics.jsonl")
        if steps:
            acc = [float(r["accuracy"]) for r in steps]
            data[name] = {"steps": len(acc), "first10": _mean(acc[:SAMPLE_WINDOW]),
                          "last10": _mean(acc[-SAMPLE_WINDOW:]),
                          "greedy_test": (greedy or {}).get(name)}
    return data


def _by_task(ev: EvalResult) -> dict[str, dict]:
    """task -> accuracy per model, its intervals, and the paired gains on that task's part."""
    n, out = ev.problems, {}
    for i, (task, acc) in enumerate(ev.by_task().items()):
        ci, gains = _intervals({m: bits[i * n:(i + 1) * n] for m, bits in ev.correct.items()})
        out[task] = {"accuracy": acc, "ci95": ci, "gains": gains}
    return out


def _by_task_lines(data: dict) -> list[str]:
    by_task = data.get("by_task") or {}
    if not by_task:
        return []
    lines = ["", f"By task ({data['eval_problems']} test problems each; code: pass@1 on held-out "
             "specs, by hidden tests in the sandbox):", "",
             "| task | model | held-out accuracy | 95% CI | gain over SFT, points (paired 95% CI) |",
             "|---|---|---|---|---|"]
    for task, d in by_task.items():
        for model, value in d["accuracy"].items():
            lines.append(f"| {task} | {_LABELS.get(model, model)} | {_pct(value)} | "
                         f"{_ci(d['ci95'].get(model))} | {_gain(d['gains'].get(model))} |")
    return lines


def build(ctx: Context) -> dict:
    ev = ctx.optional("eval", EvalResult)
    sft_res = ctx.optional("sft", SFTResult)
    export = ctx.optional("export", ExportResult)
    acc = ev.accuracy if ev is not None else {}
    sft, grpo = acc.get("sft"), acc.get("grpo")
    walls = {stage: r.wall_s for stage, r in ctx.results.items()}
    acc_ci, gains = _intervals(ev.correct if ev is not None else {})
    return {
        "name": ctx.recipe.name,
        "seed": ctx.recipe.seed,
        "sft_accuracy": sft,
        "grpo_accuracy": grpo,
        "gain_points": None if sft is None or grpo is None else round(100 * (grpo - sft), 2),
        "eval_problems": ev.problems if ev is not None else None,  # per task
        "eval_total": ev.problems * len(ev.tasks) if ev is not None else None,
        "controls": {k[len("control_"):]: v for k, v in acc.items() if k.startswith("control_")},
        "sft_ci95": acc_ci.get("sft"),
        "grpo_ci95": acc_ci.get("grpo"),
        "gain_ci95": gains.get("grpo", {}).get("ci95"),  # points, paired
        "controls_ci95": {k[len("control_"):]: v for k, v in acc_ci.items()
                          if k.startswith("control_")},
        "controls_gain_points": {k[len("control_"):]: v for k, v in gains.items()
                                 if k.startswith("control_")},
        "ci_method": CI_METHOD,
        "stage_wall_s": walls,
        "total_wall_s": round(sum(w or 0.0 for w in walls.values()), 1),
        "sft": None if sft_res is None else {
            "step": sft_res.step, "val_accuracy": sft_res.val_accuracy,
            "examples": sft_res.examples, "steps_run": sft_res.steps_run,
            "curve": [dataclasses.asdict(c) for c in sft_res.curve]},
        "export": None if export is None else _export_summary(export),
        "tasks": ev.tasks if ev is not None else list(ctx.recipe.data.tasks),
        "by_task": _by_task(ev) if ev is not None and len(ev.tasks) > 1 else {},
        "first_errors": first_errors(ctx.out, list(acc) if ev is not None else None),
        "sample_accuracy": sample_accuracy(ctx.out, acc, ctx.recipe.pipeline.stages),
    }


def _ci(pair) -> str:
    return "" if not pair else f"{100 * pair[0]:.1f}-{100 * pair[1]:.1f}%"


def _gain(g) -> str:
    return "" if not g else f"{g['points']:+.1f} ({g['ci95'][0]:+.1f} to {g['ci95'][1]:+.1f})"


_LABELS = {"sft": "SFT", "grpo": "GRPO", "control_shuffled_rewards": "control: shuffled rewards",
           "control_more_sft": "control: more SFT"}
_CATEGORY_TEXT = {
    "copy": "copy (start value, operand, operator or step not the question's; value not carried)",
    "arith": "arith (copied right, computed wrong)",
    "format": "format (no readable steps or integer answer)",
    "answer": "answer (every step right, answer not the last result)",
    "none": "none (no error found)",
    "code: format": "code: format (no think block or no program)",
    "code: plan": "code: plan (operations or constants not the spec's: the spec misread)",
    "code: program": "code: program (right plan, wrong program: composition or Python)",
}


def _first_error_lines(table: dict[str, dict[str, int]], problems) -> list[str]:
    if not table:
        return []
    models = list(table)
    wrong = {m: sum(table[m].values()) for m in models}
    of = f" of {problems}" if problems else ""
    lines = ["", "First error of each wrong greedy test answer, read step by step against the "
             "question (math: mindxh/tasks/arith_errors.py; code: the plan against the spec's, "
             "mindxh/tasks/code.py); % of that model's wrong answers:", "",
             "| first error | " + " | ".join(_LABELS.get(m, m) for m in models) + " |",
             "|---|" + "---|" * len(models),
             "| wrong answers | " + " | ".join(f"{wrong[m]}{of}" for m in models) + " |"]
    for cat in (*CATEGORIES, *CODE_ERRORS):
        if not any(cat in table[m] for m in models):
            continue
        if cat == "none" and not any(table[m].get(cat) for m in models):
            continue
        cells = [f"{table[m].get(cat, 0)} ({_pct(table[m].get(cat, 0) / wrong[m])})" if wrong[m]
                 else "0" for m in models]
        lines.append(f"| {_CATEGORY_TEXT.get(cat, cat)} | " + " | ".join(cells) + " |")
    return lines


def _sample_accuracy_lines(data: dict[str, dict]) -> list[str]:
    if not data:
        return []
    lines = ["", f"GRPO's own samples (temperature 1, each step's fresh training problems), mean "
             f"accuracy over the first and the last {SAMPLE_WINDOW} steps, beside greedy test "
             "accuracy:", "",
             f"| run | steps | sample accuracy, first {SAMPLE_WINDOW} steps | "
             f"last {SAMPLE_WINDOW} steps | greedy test accuracy |", "|---|---|---|---|---|"]
    for name, d in data.items():
        lines.append(f"| {_LABELS.get(name, name)} | {d['steps']} | {_pct(d['first10'])} | "
                     f"{_pct(d['last10'])} | {_pct(d.get('greedy_test'))} |")
    return lines


def markdown(ctx: Context, data: dict) -> str:
    r = ctx.recipe
    gains = {"grpo": None if data.get("gain_ci95") is None else
             {"points": data["gain_points"], "ci95": data["gain_ci95"]},
             **{f"control_{k}": v for k, v in (data.get("controls_gain_points") or {}).items()}}
    lines = [f"# {data['name']}: tiny X1 pipeline report", "",
             f"Seed {data['seed']}; task(s): {', '.join(data.get('tasks') or ['math'])}; held-out "
             f"test problems: {data['eval_problems']} per task (level "
             f"{r.sft.level}, greedy decoding, never in any training stream, and not the validation"
             " problems that chose the SFT checkpoint or followed GRPO).", "",
             *([r.pipeline.note, ""] if r.pipeline.note else []),
             "| model | held-out accuracy | 95% CI | gain over SFT, points (paired 95% CI) |",
             "|---|---|---|---|",
             f"| SFT (cold start, {r.sft.cold_start_examples} worked solutions) | "
             f"{_pct(data['sft_accuracy'])} | {_ci(data.get('sft_ci95'))} | |",
             f"| GRPO ({r.grpo.steps} steps x {r.grpo.prompts_per_step} prompts x G={r.grpo.group_size},"
             f" answers only) | {_pct(data['grpo_accuracy'])} | {_ci(data.get('grpo_ci95'))} | "
             f"{_gain(gains['grpo'])} |"]
    names = {"shuffled_rewards": "control: GRPO with rewards shuffled across the batch",
             "more_sft": "control: more SFT epochs on the cold-start set, GRPO's wall time"}
    for key, value in data["controls"].items():
        lines.append(f"| {names.get(key, key)} | {_pct(value)} | "
                     f"{_ci((data.get('controls_ci95') or {}).get(key))} | "
                     f"{_gain(gains.get(f'control_{key}'))} |")
    if data["gain_points"] is not None:
        ci = data.get("gain_ci95")
        within = "" if not ci else (f" (95% CI {ci[0]:+.1f} to {ci[1]:+.1f}, paired over the "
                                    f"{data.get('eval_total') or data['eval_problems']} test problems)")
        lines += ["", f"GRPO gain over its SFT start: **{data['gain_points']:+.1f} points**{within}.",
                  "", data.get("ci_method", CI_METHOD) + "."]
    if data.get("sft"):
        s = data["sft"]
        curve = ", ".join(f"{c['step']}: {_pct(c['val_accuracy'])}" for c in s["curve"] or [])
        lines += ["", f"SFT checkpoint used: step {s['step']} (validation {_pct(s['val_accuracy'])}; "
                  f"stop_at_accuracy {r.sft.stop_at_accuracy}; training ran {s['steps_run']} of "
                  f"sft.max_steps={r.sft.max_steps}). Validation curve: {curve}."]
    lines += _by_task_lines(data)
    lines += _sample_accuracy_lines(data.get("sample_accuracy") or {})
    lines += _first_error_lines(data.get("first_errors") or {},
                                data.get("eval_total") or data.get("eval_problems"))
    lines += ["", "| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in data["stage_wall_s"].items()]
    lines += [f"| total | {data['total_wall_s']} |", "", "![GRPO reward and accuracy](grpo.png)", ""]
    if data.get("export") and "file" in data["export"]:
        e = data["export"]
        lines += [f"Exported: `{e['file']}` ({e['bytes'] / 1e6:.1f} MB), reloaded logits within "
                  f"{e['max_abs_diff']:.2g} of the live model.", ""]
    return "\n".join(lines)


def _series(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


def plot(ctx: Context, path: Path) -> None:
    """Reward and sample accuracy per GRPO step, validation accuracy at its checks."""
    # imported here, not at module load: matplotlib is slow to import and only the plot needs it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {GRPO_RUNS[name][2]: ctx.out / folder / "metrics.jsonl"
            for name, folder in grpo_runs(ctx.recipe.pipeline.stages).items()}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, file in runs.items():
        rows = _series(file)
        steps = [r for r in rows if "reward_mean" in r]
        if not steps:
            continue
        ax1.plot([r["step"] for r in steps], [r["reward_mean"] for r in steps], label=f"{label}: reward")
        ax1.plot([r["step"] for r in steps], [r["accuracy"] for r in steps], alpha=0.6,
                 label=f"{label}: sample accuracy")
        val = [r for r in rows if "val_accuracy" in r]
        ax2.plot([r["step"] for r in val], [r["val_accuracy"] for r in val], marker="o", label=label)
    ax1.set_xlabel("GRPO step")
    ax1.set_title("reward (correct + format) and sampled accuracy")
    ax2.set_xlabel("GRPO step")
    ax2.set_title("validation accuracy (greedy)")
    for ax in (ax1, ax2):
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, png.getvalue())
