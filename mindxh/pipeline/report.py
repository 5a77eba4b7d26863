"""report.json, report.md and the GRPO plot of a pipeline run.

The report reads the stages' typed results; its keys and text are what the README and
tools/x1_study.py quote, so they change only together with those. Every accuracy is on the
test problems and comes with a 95% interval (Wilson); every gain over SFT with a paired
one over the same problems (stats.py), so a difference within noise reads as such.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from mindxh.pipeline.context import Context
from mindxh.pipeline.results import EvalResult, ExportResult, SFTResult
from mindxh.pipeline.stats import paired_difference, wilson
from mindxh.utils.fsio import atomic_write, read_jsonl

__all__ = ["build", "markdown", "plot"]


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
        "eval_problems": ev.problems if ev is not None else None,
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
    }


def _ci(pair) -> str:
    return "" if not pair else f"{100 * pair[0]:.1f}-{100 * pair[1]:.1f}%"


def _gain(g) -> str:
    return "" if not g else f"{g['points']:+.1f} ({g['ci95'][0]:+.1f} to {g['ci95'][1]:+.1f})"


def markdown(ctx: Context, data: dict) -> str:
    r = ctx.recipe
    gains = {"grpo": None if data.get("gain_ci95") is None else
             {"points": data["gain_points"], "ci95": data["gain_ci95"]},
             **{f"control_{k}": v for k, v in (data.get("controls_gain_points") or {}).items()}}
    lines = [f"# {data['name']}: tiny X1 pipeline report", "",
             f"Seed {data['seed']}; held-out test problems: {data['eval_problems']} (level "
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
                                    f"{data['eval_problems']} test problems)")
        lines += ["", f"GRPO gain over its SFT start: **{data['gain_points']:+.1f} points**{within}.",
                  "", data.get("ci_method", CI_METHOD) + "."]
    if data.get("sft"):
        s = data["sft"]
        curve = ", ".join(f"{c['step']}: {_pct(c['val_accuracy'])}" for c in s["curve"] or [])
        lines += ["", f"SFT checkpoint used: step {s['step']} (validation {_pct(s['val_accuracy'])}; "
                  f"stop_at_accuracy {r.sft.stop_at_accuracy}; training ran {s['steps_run']} of "
                  f"sft.max_steps={r.sft.max_steps}). Validation curve: {curve}."]
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

    runs = {"GRPO": ctx.out / "grpo" / "metrics.jsonl",
            "shuffled rewards": ctx.out / "control_shuffled" / "metrics.jsonl"}
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
