"""`mindxh tokenizer train`: build a tokenizer from files or from synthetic data."""

from __future__ import annotations

import argparse

from mindxh.cli.recipe_cmd import seed_int
from mindxh.data.synthetic import LEVELS, sample_texts
from mindxh.tokenizer.spm import Tokenizer, TokenizerError, train, train_from_texts

__all__ = ["register", "run"]


def _levels(value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"levels must be like 1,2,3, got {value!r}") from exc
    bad = [lv for lv in levels if lv not in LEVELS]
    if not levels or bad:
        raise argparse.ArgumentTypeError(f"levels must be among {sorted(LEVELS)}, got {value!r}")
    return levels


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tokenizer`` (with its ``train`` sub-command) to a parent CLI."""
    parser = subparsers.add_parser("tokenizer", help="build SentencePiece tokenizers")
    sub = parser.add_subparsers(dest="tokenizer_command", required=True)
    tr = sub.add_parser(
        "train",
        help="train a tokenizer with the reasoning special tokens",
        description="Train a SentencePiece tokenizer on text files or synthetic problems.",
    )
    source = tr.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+", metavar="FILE", help="text files, one sentence a line"
    )
    source.add_argument(
        "--synthetic", type=int, metavar="N", help="train on N synthetic train-split documents"
    )
    tr.add_argument("--vocab-size", type=int, required=True, metavar="N")
    tr.add_argument(
        "--out", required=True, metavar="PREFIX", help="writes PREFIX.model and PREFIX.vocab"
    )
    tr.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    tr.add_argument("--character-coverage", type=float, default=1.0)
    tr.add_argument("--seed", type=seed_int, default=0, help="synthetic data seed")
    tr.add_argument(
        "--levels", type=_levels, default=(1, 2, 3), help="synthetic levels, e.g. 1,2,3"
    )
    tr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train as `args` say and print one summary line (bad input: a TokenizerError)."""
    tok = _train(args)
    print(f"tokenizer vocab_size={tok.vocab_size} path={tok.path} sha256={tok.sha256[:12]}")
    return 0


def _train(args: argparse.Namespace) -> Tokenizer:
    common = dict(
        model_prefix=args.out,
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        character_coverage=args.character_coverage,
    )
    if args.synthetic is not None:
        if args.synthetic <= 0:
            raise TokenizerError(f"--synthetic must be positive, got {args.synthetic}")
        texts = sample_texts(args.seed, "train", args.levels, args.synthetic)
        return train_from_texts(texts, **common)
    return train(args.input, **common)
