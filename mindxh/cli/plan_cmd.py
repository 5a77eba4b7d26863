"""`mindxh plan RECIPE [--hardware 910B[,H100]] [--devices N] [--json] [--set k=v]`: memory,
communication and speed of the recipe's parallel plan on named accelerators.

Exit codes: 0 the plan fits; 1 it does not (every reason is printed, or in the JSON);
2 a user error (bad recipe, unknown hardware), as one `error:` line.
"""
from __future__ import annotations

import argparse
import json

from mindxh.cli.recipe_cmd import add_set_option


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plan", help="memory, communication and speed of a parallel plan",
                            description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="path to a recipe YAML file")
    parser.add_argument("--hardware", help="profile(s), comma-separated for a side-by-side "
                        "comparison, e.g. 910B,H100 (default: the recipe's cluster.hardware)")
    parser.add_argument("--devices", type=int, help="scale out to N devices: data_parallel = "
                        "N / (tensor x pipeline)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_set_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mindxh.config.loader import RecipeError
    from mindxh.planner import (
        load_for_plan,
        make_plan,
        profile_for,
        render,
        render_side_by_side,
        side_by_side_dict,
    )

    overrides = list(args.overrides)
    recipe, problems = load_for_plan(args.recipe, overrides)
    if args.devices is not None:
        if args.devices < 1:
            raise RecipeError(f"--devices {args.devices}: must be >= 1")
        model_ranks = recipe.parallel.tensor * recipe.parallel.pipeline
        if args.devices % model_ranks == 0:
            overrides.append(f"parallel.data_parallel={args.devices // model_ranks}")
        overrides.append(f"cluster.devices={args.devices}")
        recipe, problems = load_for_plan(args.recipe, overrides)
        problems = [p.replace(f"--set cluster.devices={args.devices}", f"--devices {args.devices}")
                    for p in problems]
    source = f"--hardware {args.hardware}" if args.hardware else \
        f"cluster.hardware {recipe.cluster.hardware!r}"  # where the names came from
    names = [n.strip() for n in (args.hardware or recipe.cluster.hardware).split(",") if n.strip()]
    if not names:
        raise RecipeError(f"{source}: name at least one profile, e.g. 910B or 910B,H100")
    profiles = [profile_for(n) for n in names]
    seen = [p.name for p in profiles]
    twice = next((n for n in seen if seen.count(n) > 1), None)
    if twice is not None:
        raise RecipeError(f"{source}: names {twice} twice; a side-by-side "
                          "compares different profiles")
    plans = [make_plan(recipe, profile, problems) for profile in profiles]
    if args.json:
        payload = plans[0].to_dict() if len(plans) == 1 else side_by_side_dict(plans)
        print(json.dumps(payload, indent=2))
    elif len(plans) == 1:
        print(render(plans[0]))
    else:
        print(render_side_by_side(plans))
    return 0 if all(p.fits for p in plans) else 1
