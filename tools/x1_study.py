"""The tiny X1 pipeline over several seeds, with both controls; prints every figure.

    python tools/x1_study.py [--seeds 0 1] [--out runs/x1-study] [--set k=v ...]

Each seed is one `mindxh pipeline recipes/tiny/x1.yaml` run (resumable: a finished seed is
not recomputed). The table printed at the end, and written to OUT/study.md, is what the
README quotes: held-out accuracy after SFT and after GRPO, the GRPO gain, the two controls
(rewards shuffled across the batch; more SFT on the cold-start set for GRPO's wall time)
and the wall time of the main pipeline (controls excluded).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes/tiny/x1.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="runs/x1-study")
    parser.add_argument("--no-controls", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        sets = [] if args.no_controls else ["pipeline.control_shuffled_rewards=true",
                                            "pipeline.control_more_sft=true"]
        cmd = [sys.executable, "-m", "mindxh", "pipeline", args.recipe, "--seed", str(seed),
               "--output-dir", str(out)]
        for s in sets + args.overrides:
            cmd += ["--set", s]
        print("$", " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            print(f"seed {seed}: the pipeline failed", file=sys.stderr)
            return 1
        rows.append(json.loads((out / "report.json").read_text()))
    lines = ["| seed | SFT | GRPO | gain (points) | shuffled rewards | more SFT | pipeline wall (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        main_wall = sum(v for k, v in r["stage_wall_s"].items() if k != "controls" and v)
        lines.append(f"| {r['seed']} | {_pct(r['sft_accuracy'])} | {_pct(r['grpo_accuracy'])} | "
                     f"{r['gain_points']:+.1f} | {_pct(r['controls'].get('shuffled_rewards'))} | "
                     f"{_pct(r['controls'].get('more_sft'))} | {main_wall:.0f} |")
    gains = [r["gain_points"] for r in rows]
    lines += ["", f"mean GRPO gain over {len(rows)} seeds: {sum(gains) / len(gains):+.1f} points"]
    text = "\n".join(lines)
    print(text)
    (Path(args.out) / "study.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
