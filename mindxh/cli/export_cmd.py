"""`mindxh export --checkpoint CKPT --format mindir --out DIR`: a trained model as MindIR graphs.

DIR receives prefill.mindir, decode.mindir, the tokenizer and manifest.json (see
mindxh/export/mindir.py); `mindxh generate --mindir DIR` then runs from those files alone.
The pipeline's export stage calls the same function, so both produce the same directory.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export a checkpoint as MindIR inference graphs")
    parser.add_argument("--checkpoint", required=True,
                        help="a run directory (its newest checkpoint) or RUN/checkpoints/step-N")
    parser.add_argument("--format", default="mindir", choices=["mindir"],
                        help="mindir (ONNX fails on several ops in MindSpore 2.10; AIR is Ascend-only)")
    parser.add_argument("--out", required=True, type=Path, help="the directory to write")
    parser.add_argument("--max-len", type=int, default=None,
                        help="prompt + completion tokens the caches hold (default: max_seq_len + 1)")
    parser.add_argument("--prompt-bucket", type=int, default=32,
                        help="prompt blocks are padded to multiples of this (as `generate` does)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest |logit difference| accepted when the graphs are reloaded")
    parser.add_argument("--device", default="CPU", choices=["CPU", "Ascend", "GPU"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import mindspore as ms

    from mindxh.export.mindir import export_checkpoint

    ms.set_device(args.device)
    ms.set_context(mode=ms.GRAPH_MODE)
    summary = export_checkpoint(args.checkpoint, args.out, max_len=args.max_len,
                                prompt_bucket=args.prompt_bucket, tolerance=args.tolerance)
    for name, size in summary.files.items():
        print(f"{summary.directory / name}\t{size}")
    print(f"{summary.manifest}\tmax_abs_diff {summary.max_abs_diff:.3g}")
    return 0
