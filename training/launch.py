"""Entry point for `accelerate launch -m secfm.training.launch cpt|sft --config YAML` (multi-GPU).

`secfm train cpt|sft` re-runs itself through this module when a recipe asks for more than one
GPU; each process then builds the same data and joins the DeepSpeed / FSDP group.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="secfm.training.launch")
    parser.add_argument("stage", choices=["cpt", "sft"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    from secfm.errors import SecfmError
    from secfm.training.cli import _parse_sets
    from secfm.training.recipes import load_recipe
    from secfm.training.trainer import run_training

    try:
        recipe = load_recipe(args.config, _parse_sets(args.sets))
        if recipe.stage != args.stage:
            raise SecfmError(f"recipe {args.config} is a {recipe.stage} recipe")
        summary = run_training(recipe, resume=False if args.no_resume else "auto")
    except SecfmError as exc:
        print(f"secfm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
