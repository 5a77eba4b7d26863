"""The benchmark against the peers, side by side: `mindxh bench` without installing the CLI.

    python tools/bench.py [--configs tiny,medium,small] [--repeats 3] [--only train|generate|grpo]
                          [--peers mindxh-graph,mindxh-pynative,torch-eager,torch-compile,mindformers]
                          [--out runs/bench]

The harness is mindxh/bench/ (docs/performance.md); this file only forwards the arguments.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindxh.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
