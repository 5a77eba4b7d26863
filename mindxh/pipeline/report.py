"""report.json, report.md and the GRPO plot of a pipeline run."""
from __future__ import annotations

import json
from pathlib import Path

from mindxh.pipeline.context import Context

__all__ = ["build", "markdown", "plot"]


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def build(ctx: Context) -> dict:
    res = ctx.results
    acc = res.get("eval", {}).get("accuracy", {})
    sft, grpo = acc.get("sft"), acc.get("grpo")
    data = {
        "name": ctx.recipe.name,
        "seed": ctx.recipe.seed,
        "sft_accuracy": sft,
        "grpo_accuracy": grpo,
        "gain_points": None if sft is None or grpo is None else round(100 * (grpo - sft), 2),
        "eval_problems": res.get("eval", {}).get("problems"),
        "controls": {k[len("control_"):]: v for k, v in acc.items() if k.startswith("control_")},
        "stage_wall_s": {stage: r.get("wall_s") for stage, r in res.items()},
        "total_wall_s": round(sum(r.get("wall_s", 0.0) for r in res.values()), 1),
        "sft": {k: res["sft"].get(k) for k in ("step", "val_accuracy", "examples", "curve")}
        if "sft" in res else None,
        "export": res.get("export"),
    }
    return data


def markdown(ctx: Context, data: dict) -> str:
    r = ctx.recipe
    lines = [f"# {data['name']}: tiny X1 pipeline report", "",
             f"Seed {data['seed']}; held-out problems: {data['eval_problems']} (level {r.sft.level}, "
             "greedy decoding, never in any training stream).", "",
             *([r.pipeline.note, ""] if r.pipeline.note else []),
             "| model | held-out accuracy |", "|---|---|",
             f"| SFT (cold start, {r.sft.cold_start_examples} worked solutions) | "
             f"{_pct(data['sft_accuracy'])} |",
             f"| GRPO ({r.grpo.steps} steps x {r.grpo.prompts_per_step} prompts x G={r.grpo.group_size},"
             f" answers only) | {_pct(data['grpo_accuracy'])} |"]
    names = {"shuffled_rewards": "control: GRPO with rewards shuffled across the batch",
             "more_sft": "control: more SFT epochs on the cold-start set, GRPO's wall time"}
    for key, value in data["controls"].items():
        lines.append(f"| {names.get(key, key)} | {_pct(value)} |")
    if data["gain_points"] is not None:
        lines += ["", f"GRPO gain over its SFT start: **{data['gain_points']:+.1f} points**."]
    if data.get("sft"):
        s = data["sft"]
        curve = ", ".join(f"{c['step']}: {_pct(c['val_accuracy'])}" for c in s["curve"] or [])
        lines += ["", f"SFT checkpoint used: step {s['step']} (validation {_pct(s['val_accuracy'])}; "
                  f"stop_at_accuracy {r.sft.stop_at_accuracy}). Validation curve: {curve}."]
    lines += ["", "| stage | wall time (s) |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in data["stage_wall_s"].items()]
    lines += [f"| total | {data['total_wall_s']} |", "", "![GRPO reward and accuracy](grpo.png)", ""]
    if data.get("export") and "file" in data["export"]:
        e = data["export"]
        lines += [f"Exported: `{e['file']}` ({e['bytes'] / 1e6:.1f} MB), reloaded logits within "
                  f"{e['max_abs_diff']:.2g} of the live model.", ""]
    return "\n".join(lines)


def _series(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(ctx: Context, path: Path) -> None:
    """Reward and sample accuracy per GRPO step, validation accuracy at its checks."""
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
