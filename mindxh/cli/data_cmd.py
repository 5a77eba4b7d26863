"""`mindxh data prepare`: tokenise and pack input files into MindRecord shards + manifest.

Bad input (malformed lines, missing fields, over-long documents...) is skipped and
reported per file with line numbers, or is an error `FILE:LINE: reason` with --strict.
Like every command, a user error prints one `error:` line and exits 2.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from mindxh.data.prepare import DEFAULT_MAX_DOC_CHARS, KINDS


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="prepare training data")
    data_sub = parser.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser(
        "prepare", help="tokenise and pack inputs into MindRecord shards",
        description="Tokenise .jsonl/.ndjson/.txt (optionally .gz) and .parquet inputs and pack "
                    "them into fixed-length rows in MindRecord shards with a manifest.json. "
                    "Running again with the same inputs and options does nothing.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input files, read in this order")
    p.add_argument("--kind", choices=KINDS, required=True,
                   help="pretrain: 'text' documents, split across rows; sft: chat samples "
                        "('messages' or 'prompt'+'response'), kept whole, loss on the answers")
    p.add_argument("--tokenizer", required=True, metavar="TOKENIZER",
                   help="a SentencePiece .model, or a Hugging Face tokenizer.json (its special "
                        "tokens from the tokenizer_config.json beside it); use the file the "
                        "training recipe's tokenizer.path names")
    p.add_argument("--seq-len", type=int, required=True, metavar="N", help="tokens per row")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="tokenising processes (default: the usable CPUs; 0 = none, all in one process)")
    p.add_argument("--strict", action="store_true", help="the first bad record is an error")
    p.add_argument("--rows-per-shard", type=int, default=None, metavar="R",
                   help="rows per shard file (default: ~256 MiB shards)")
    p.add_argument("--max-doc-chars", type=int, default=DEFAULT_MAX_DOC_CHARS, metavar="C",
                   help="longer pretraining documents are skipped as over-long; 0 = no limit "
                        f"(default {DEFAULT_MAX_DOC_CHARS:,})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a different prepared dataset already in DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mindxh.data.prepare import prepare

    argv = sys.argv[1:]
    command = shlex.join(["mindxh", *argv]) if "prepare" in argv else _canonical(args)
    m = prepare(args.inputs, args.out, args.tokenizer, kind=args.kind, seq_len=args.seq_len,
                workers=args.workers, strict=args.strict, rows_per_shard=args.rows_per_shard,
                max_doc_chars=args.max_doc_chars, overwrite=args.overwrite,
                progress=not args.no_progress, command=command)
    skipped = sum(m["skipped"].values())
    print(f"done: {m['documents']:,} documents, {m['tokens']:,} tokens ({m['loss_tokens']:,} with loss), "
          f"{m['rows']:,} rows of {m['seq_len']} in {len(m['shards'])} shard(s), "
          f"{skipped:,} records skipped | {args.out}/manifest.json")
    return 0


def _canonical(args: argparse.Namespace) -> str:
    """The command line these arguments stand for (when not run from a shell)."""
    parts = ["mindxh", "data", "prepare", "--kind", args.kind, "--tokenizer", args.tokenizer,
             "--seq-len", str(args.seq_len), "--out", args.out]
    for flag, value in (("--workers", args.workers), ("--rows-per-shard", args.rows_per_shard)):
        if value is not None:
            parts += [flag, str(value)]
    if args.max_doc_chars != DEFAULT_MAX_DOC_CHARS:
        parts += ["--max-doc-chars", str(args.max_doc_chars)]
    parts += [f for f, on in (("--strict", args.strict), ("--overwrite", args.overwrite)) if on]
    return shlex.join(parts + list(args.inputs))
