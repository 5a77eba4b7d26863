"""KV-cache decoding vs recomputation (vs transformers' generate): now a section of `mindxh bench`.

    python tools/bench_generate.py [--configs tiny] [--gen-batch 1,32] [--gen-new 64,256] [bench options]

Kept so existing commands keep working; it runs `mindxh bench --only generate`, which times
mindxh's cached Generator, full recomputation, and transformers' `generate` on the same
weights and prompts, and checks their greedy tokens agree. See docs/performance.md.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindxh.cli.main import main  # noqa: E402

DEFAULTS = ["--only", "generate", "--configs", "tiny", "--out", "runs/bench-generate"]

if __name__ == "__main__":
    sys.exit(main(["bench", *DEFAULTS, *sys.argv[1:]]))
