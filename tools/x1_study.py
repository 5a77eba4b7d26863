"""The tiny X1 pipeline over several seeds, with both controls; prints every figure.

    python tools/x1_study.py [--seeds 0 1 2] [--out runs/x1-study] [--set k=v ...]

Each seed is one `mindxh pipeline recipes/tiny/x1.yaml` run into OUT/seed<N> (resumable:
a finished seed is not recomputed; one whose recipe changed is refused by the pipeline,
naming the key, unless the stages are redone). The table printed at the end, and written
to OUT/study.md (OUT/study.json holds the numbers), is what the README quotes: per seed,
test accuracy after SFT and after GRPO with 95% intervals, the GRPO gain with its paired
interval, the two controls (rewards shuffled across the batch; more SFT on the cold-start
set for GRPO's wall time), the SFT step kept and the wall time of the main pipeline
(controls excluded); then mean, standard deviation (n - 1) and min/max over the seeds.
One seed is not a claim: the study refuses fewer than two, and says how many seeds' paired
interval of the gain lies above zero.

    python tools/x1_study.py --reuse-sft runs/x1-study --out runs/abl-kl --controls none \
        --set grpo.kl_beta=0.04
    python tools/x1_study.py --compare runs/x1-study runs/abl-kl ...

An ablation of a GRPO key reuses the baseline study's SFT checkpoints; `--compare` prints the
ablation table: one row per study, the first as the baseline.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# column -> how to read it from report.json (None: not measured in that run)
COLUMNS = {
    "SFT": lambda r: _pts(r["sft_accuracy"]),
    "GRPO": lambda r: _pts(r["grpo_accuracy"]),
    "gain": lambda r: r["gain_points"],
    "shuffled rewards": lambda r: _pts(r["controls"].get("shuffled_rewards")),
    "more SFT": lambda r: _pts(r["controls"].get("more_sft")),
    "SFT step": lambda r: (r.get("sft") or {}).get("step"),
    "wall (s)": lambda r: sum(v for k, v in r["stage_wall_s"].items() if k != "controls" and v),
}


def _pts(x):
    return None if x is None else 100 * x


def _ci(pair, scale=100.0) -> str:
    return "" if not pair else f" [{scale * pair[0]:.1f}, {scale * pair[1]:.1f}]"


def _cell(column: str, r: dict) -> str:
    value = COLUMNS[column](r)
    if value is None:
        return "n/a"
    if column == "SFT":
        return f"{value:.1f}{_ci(r.get('sft_ci95'))}"
    if column == "GRPO":
        return f"{value:.1f}{_ci(r.get('grpo_ci95'))}"
    if column == "gain":
        return f"{value:+.1f}{_ci(r.get('gain_ci95'), 1.0)}"
    if column in ("shuffled rewards", "more SFT"):
        key = "shuffled_rewards" if column == "shuffled rewards" else "more_sft"
        return f"{value:.1f}{_ci((r.get('controls_ci95') or {}).get(key))}"
    return f"{value:.0f}"


def summary(rows: list[dict]) -> dict[str, dict[str, float | None]]:
    """column -> mean, std (n - 1; None with one value), min, max over the seeds measured."""
    out = {}
    for column, read in COLUMNS.items():
        values = [v for v in (read(r) for r in rows) if v is not None]
        out[column] = {"n": len(values),
                       "mean": statistics.fmean(values) if values else None,
                       "std": statistics.stdev(values) if len(values) > 1 else None,
                       "min": min(values) if values else None,
                       "max": max(values) if values else None}
    return out


def table(rows: list[dict]) -> str:
    stats = summary(rows)
    head = ["seed", *COLUMNS]
    lines = ["Test accuracy in % (95% Wilson interval); gain in points (95% paired interval).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([str(r["seed"])] + [_cell(c, r) for c in COLUMNS]) + " |"
              for r in rows]
    for stat in ("mean", "std", "min", "max"):
        cells = [("n/a" if stats[c][stat] is None else
                  f"{stats[c][stat]:+.1f}" if c == "gain" and stat != "std" else
                  f"{stats[c][stat]:.1f}") for c in COLUMNS]
        lines.append(f"| {stat} | " + " | ".join(cells) + " |")
    above = sum(1 for r in rows if r.get("gain_ci95") and r["gain_ci95"][0] > 0)
    g = stats["gain"]
    if g["mean"] is not None:
        spread = ("" if g["std"] is None else
                  f" (std {g['std']:.1f}, min {g['min']:+.1f}, max {g['max']:+.1f})")
        lines += ["", f"GRPO gain over {g['n']} seeds: mean {g['mean']:+.1f} points{spread}; "
                      f"paired 95% interval above zero in {above} of {len(rows)} seeds."]
    for key, label in (("shuffled_rewards", "shuffled-rewards control"),
                       ("more_sft", "more-SFT control")):
        gains = [g for g in ((r.get("controls_gain_points") or {}).get(key) for r in rows) if g]
        if gains:
            pts = [g["points"] for g in gains]
            below = sum(1 for g in gains if g["ci95"][1] < 0)
            above_c = sum(1 for g in gains if g["ci95"][0] > 0)
            lines.append(f"{label} vs SFT over {len(pts)} seeds: mean {statistics.fmean(pts):+.1f} "
                         f"points (min {min(pts):+.1f}, max {max(pts):+.1f}); paired 95% interval "
                         f"below zero in {below}, above zero in {above_c}.")
    return "\n".join(lines)


# recipe keys that name a run rather than change what it computes
_NOT_A_VARIANT = ("name", "seed", "output_dir", "pipeline.")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _recipe(study: Path) -> dict:
    """The resolved recipe of STUDY's first finished seed (what its pipeline recorded)."""
    import yaml

    first = min(study.glob("seed*/recipe.yaml"), default=None)
    return _flat(yaml.safe_load(first.read_text())) if first else {}


def _variant(study: Path, base: dict) -> str:
    """What STUDY's recipe sets differently from the baseline's, e.g. `grpo.kl_beta=0.04`."""
    mine = _recipe(study)
    diff = [f"`{k}={json.dumps(mine.get(k))}`" for k in sorted(set(mine) | set(base))
            if mine.get(k) != base.get(k) and not k.startswith(_NOT_A_VARIANT)]
    # of the stages, only a training stage left out changes a result (controls, export do not)
    trained = ("pretrain", "sft", "grpo")
    diff += [f"no {stage} stage" for stage in trained
             if stage in base.get("pipeline.stages", trained)
             and stage not in mine.get("pipeline.stages", trained)]
    return ", ".join(diff) or "baseline recipe"


def _reports(study: Path) -> dict[int, dict]:
    """seed -> report.json of every finished seed under STUDY."""
    out = {}
    for path in sorted(study.glob("seed*/report.json")):
        report = json.loads(path.read_text())
        out[int(report["seed"])] = report
    return out


@functools.lru_cache(maxsize=None)  # the baseline's are read once, not once per ablation
def _results(study: Path, seed: int) -> list[tuple[str, bool]]:
    """(question, correct) of every greedy test answer of the GRPO model, in test order."""
    path = study / f"seed{seed}" / "eval" / "grpo_samples.jsonl"
    return [(r["question"], bool(r["correct"])) for r in map(json.loads, path.open())]


def paired_vs(study: Path, base: Path, seeds: list[int]) -> tuple[float, float, float] | None:
    """(mean, low, high) in points of STUDY's minus BASE's GRPO test accuracy, paired by
    problem and pooled over SEEDS: the noise of a 500-problem test set shown, not guessed.
    None when either lacks the per-problem samples or they are not the same problems."""
    from mindxh.utils.stats import paired_difference

    after, before = "", ""
    for seed in seeds:
        try:
            mine, theirs = _results(study, seed), _results(base, seed)
        except FileNotFoundError:
            return None
        if [q for q, _ in mine] != [q for q, _ in theirs]:
            return None
        after += "".join("1" if ok else "0" for _, ok in mine)
        before += "".join("1" if ok else "0" for _, ok in theirs)
    if len(after) < 2:
        return None
    return tuple(100 * x for x in paired_difference(after, before))


def compare(studies: list[Path]) -> str:
    """One row per study (the first is the baseline): GRPO test accuracy and gain over SFT,
    mean and spread over the seeds they share, and the per-seed difference from the baseline
    (an ablation that reuses the baseline's SFT has the same SFT accuracy on every seed, so the
    difference is GRPO's alone)."""
    base, base_recipe = _reports(studies[0]), _recipe(studies[0])
    lines = ["GRPO test accuracy and gain in points, mean (std; min, max) over seeds. vs "
             "baseline: the first row's GRPO accuracy subtracted on the seeds both ran, paired by "
             "test problem and pooled over those seeds [95% interval], then per seed (min, max).",
             "", "| variant | seeds | SFT | GRPO | gain | paired 95% above 0 | vs baseline |",
             "|---|---|---|---|---|---|---|"]

    def fmt(values: list[float], sign: str = "") -> str:
        mean = statistics.fmean(values)
        std = f"{statistics.stdev(values):.1f}; " if len(values) > 1 else ""
        return (f"{mean:{sign}.1f} ({std}{min(values):{sign}.1f}, {max(values):{sign}.1f})")

    for study in studies:
        reports = _reports(study)
        seeds = sorted(reports)
        if not seeds:
            raise SystemExit(f"--compare: {study} has no finished seed (seed*/report.json)")
        rows = [reports[s] for s in seeds]
        shared = [s for s in seeds if s in base]
        diff = [100 * (reports[s]["grpo_accuracy"] - base[s]["grpo_accuracy"]) for s in shared]
        above = sum(1 for r in rows if r.get("gain_ci95") and r["gain_ci95"][0] > 0)
        lines.append(" | ".join([
            f"| {_variant(study, base_recipe)} ({study.name})", ", ".join(map(str, seeds)),
            f"{statistics.fmean(100 * r['sft_accuracy'] for r in rows):.1f}",
            fmt([100 * r["grpo_accuracy"] for r in rows]),
            fmt([r["gain_points"] for r in rows], "+"), f"{above} of {len(rows)}",
            _versus(study, studies[0], shared, diff) + " |"]))
    return "\n".join(lines)


def _versus(study: Path, base: Path, shared: list[int], diff: list[float]) -> str:
    if study == base:
        return "baseline"
    if not shared:
        return "no seed in common"
    pooled = paired_vs(study, base, shared)
    interval = "" if pooled is None else f"{pooled[0]:+.1f} [{pooled[1]:+.1f}, {pooled[2]:+.1f}]; "
    return f"{interval}per seed {min(diff):+.1f} to {max(diff):+.1f}"


def _reuse_sft(source: Path, out: Path) -> None:
    """OUT starts with SOURCE's tokenizer and the results of its tokenizer, pretrain and sft
    stages (their folders linked, so the checkpoints are read in place). The
    pipeline still checks their recorded inputs against the recipe: an override that reaches
    them is refused, not silently mixed."""
    missing = [name for name in ("tokenizer.model", "stages/sft.json") if not (source / name).exists()]
    if missing:
        raise SystemExit(f"--reuse-sft: {source} lacks {missing}; run that study first")
    (out / "stages").mkdir(parents=True)
    for name in ("tokenizer.model", "tokenizer.vocab"):
        if (source / name).exists():
            shutil.copy2(source / name, out / name)
    for stage in ("tokenizer", "pretrain", "sft"):
        result = json.loads((source / "stages" / f"{stage}.json").read_text())
        (out / "stages" / f"{stage}.json").write_text(json.dumps(_relative_to(result, source)))
    for folder in ("pretrain", "sft"):  # the results' paths lead through these links
        if (source / folder).is_dir():
            (out / folder).symlink_to((source / folder).resolve(), target_is_directory=True)


def _relative_to(result, source: Path):
    """A stage result (JSON) with paths under `source` made relative to it: stage results
    name the run's files relative to the run (absolute in results written before 2026-12)."""
    from mindxh.pipeline.context import PATH_FIELDS

    if isinstance(result, dict):
        return {k: (os.path.relpath(v, source.resolve()) if k in PATH_FIELDS and isinstance(v, str)
                    and os.path.isabs(v) and Path(v).is_relative_to(source.resolve())
                    else _relative_to(v, source)) for k, v in result.items()}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes/tiny/x1.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/x1-study")
    parser.add_argument("--controls", default="shuffled,more_sft",
                        help="comma-separated controls to run: shuffled, more_sft, or none")
    parser.add_argument("--restart-from", metavar="STAGE",
                        help="passed to each pipeline: redo STAGE and what follows it (e.g. "
                             "controls, to add a control to finished seeds)")
    parser.add_argument("--reuse-sft", metavar="STUDY",
                        help="start each seed from STUDY/seed<N>'s tokenizer, pretraining and "
                             "SFT (their results are linked, not recomputed): for ablations of "
                             "GRPO keys, which must leave those stages' inputs unchanged")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--compare", metavar="STUDY", nargs="+",
                        help="run nothing: print the ablation table of these finished studies, "
                             "the first as the baseline (written to the first's ablations.md)")
    args = parser.parse_args()
    if args.compare:
        text = compare([Path(p) for p in args.compare])
        print(text)
        (Path(args.compare[0]) / "ablations.md").write_text(text + "\n")
        return 0
    if len(set(args.seeds)) < 2:
        parser.error("give at least two seeds (three or more for a claim): one seed has no spread")
    controls = {c.strip() for c in args.controls.split(",") if c.strip()} - {"none"}
    if controls - {"shuffled", "more_sft"}:
        parser.error(f"--controls: unknown {sorted(controls - {'shuffled', 'more_sft'})}; "
                     "known: shuffled, more_sft, none")
    rows = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        if args.reuse_sft and not out.exists():
            _reuse_sft(Path(args.reuse_sft) / f"seed{seed}", out)
        sets = [f"pipeline.control_shuffled_rewards={str('shuffled' in controls).lower()}",
                f"pipeline.control_more_sft={str('more_sft' in controls).lower()}"]
        cmd = [sys.executable, "-m", "mindxh", "pipeline", args.recipe, "--seed", str(seed),
               "--output-dir", str(out)]
        if args.restart_from:
            cmd += ["--restart-from", args.restart_from]
        for s in sets + args.overrides:
            cmd += ["--set", s]
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"seed {seed}: the pipeline failed", file=sys.stderr)
            return 1
        rows.append(json.loads((out / "report.json").read_text()))
    text = table(rows)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "study.md").write_text(text + "\n")
    (Path(args.out) / "study.json").write_text(json.dumps(
        {"seeds": args.seeds, "overrides": args.overrides, "summary": summary(rows),
         "runs": rows}, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
