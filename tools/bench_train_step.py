"""mindxh's train step in graph and PyNative mode: now a section of `mindxh bench`.

    python tools/bench_train_step.py [--configs tiny] [--steps 10] [--repeats 2] [bench options]

Kept so existing commands keep working; it runs `mindxh bench --only train` with the two
mindxh peers (add `--peers ...` to compare with torch and mindformers too). The model comes
from the bench's configs (tiny/medium/small), no longer from a recipe: every peer must be
built from the same shapes. See docs/performance.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindxh.cli.main import main  # noqa: E402

DEFAULTS = ["--only", "train", "--configs", "tiny", "--peers", "mindxh-graph,mindxh-pynative",
            "--out", "runs/bench-train-step"]

if __name__ == "__main__":
    sys.exit(main(["bench", *DEFAULTS, *sys.argv[1:]]))  # later options win in argparse
