"""`mindxh recipe show RECIPE [--set k=v]`: print the fully resolved recipe."""
from __future__ import annotations

import argparse

from mindxh.config import load_recipe, recipe_to_yaml


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set model.hidden_size=256 (repeatable)")


def _int_at_least(low: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value
    return parse


# argparse types: an option is refused as itself, before anything loads (`--max-steps 0` is
# not reported as the --set it becomes, nor `--seed -1` by NumPy after the model compiled)
positive_int = _int_at_least(1, "a positive integer")
seed_int = _int_at_least(0, "a non-negative integer")


def add_max_steps_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-steps", type=positive_int, metavar="N",
                        help="shorthand for --set train.max_steps=N")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("recipe", help="inspect recipes")
    inner = parser.add_subparsers(dest="recipe_command", required=True)
    show = inner.add_parser("show", help="print the resolved recipe (bases and --set applied)")
    show.add_argument("recipe", help="path to a recipe YAML file")
    add_set_option(show)
    show.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    print(recipe_to_yaml(load_recipe(args.recipe, args.overrides)), end="")
    return 0
