"""`mindxh train RECIPE`: pretrain as the recipe says; print a summary at the end."""
from __future__ import annotations

import argparse

from mindxh.cli.recipe_cmd import add_max_steps_option, add_set_option
from mindxh.config import load_recipe


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="pretrain a model from a recipe")
    parser.add_argument("recipe", help="path to a recipe YAML file")
    parser.add_argument("--output-dir", help="where checkpoints and metrics go (default: recipe output_dir)")
    add_max_steps_option(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_set_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.output_dir is not None:
        overrides.append(f"output_dir={args.output_dir}")
    recipe = load_recipe(args.recipe, overrides)  # every recipe error before any compute

    from mindxh.train import runtime
    runtime.prepare_process(recipe)  # before the trainer imports MindSpore
    from mindxh.train.trainer import Trainer

    result = Trainer(recipe, recipe.output_dir, resume=args.resume,
                     show_progress=not args.no_progress).run()
    if runtime.rank() != 0:
        return 0
    if result.steps_run == 0:
        print(f"nothing to do: {result.output_dir} is at step {result.final_step}, "
              f"train.max_steps={recipe.train.max_steps}; raise --max-steps to train on")
        return 0
    eval_text = f"{result.eval_loss:.4f}" if result.eval_loss is not None else "n/a"
    first = result.final_step - result.steps_run + 1  # > 1 after --resume: time is this session's
    steps = f"{result.final_step} steps" if first == 1 else \
        f"{result.final_step} steps (this session: {first}-{result.final_step})"
    print(f"done: {steps} in {result.wall_s:.1f}s | loss {result.final_loss:.4f} | "
          f"held-out loss {eval_text} | {result.tokens_per_s:,.0f} tokens/s | MFU {result.mfu:.2%} | "
          f"{result.parameters['total']:,} parameters | outputs in {result.output_dir}")
    return 0
