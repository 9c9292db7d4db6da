"""The `data` subcommands: write the stand-in talking and expression sets."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_data_commands"]


def add_data_commands(subparsers: Any) -> argparse.ArgumentParser:
    """Add `data talking` and `data expressions` to a top-level `add_subparsers()` object.

    Each handler is stored as `handler` (the console script's pattern) and returns None.
    """
    data = subparsers.add_parser(
        "data", help="write stand-in training data in VOCAset's and Florence4D's formats"
    )
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    talking = sub.add_parser(
        "talking",
        help="synthetic speech + phoneme-timed meshes in VOCAset's released format",
        description=(
            "Write about 220 synthetic speakers (eSpeak NG's English accents and voice variants "
            "at 120-220 wpm; whole voices held out for validation and test), each saying 2-3 "
            "sentences of their own, at 60 fps in VOCAset's format, with phoneme timings beside "
            "it. The default set is about 7 GB (V x 3 float32 per frame, as VOCAset) and takes "
            "about 3 minutes; --small writes ~60 MB."
        ),
    )
    talking.add_argument("--out", required=True, metavar="DIR", help="output folder")
    talking.add_argument(
        "--small", action="store_true", help="3 speakers (one per split) x 2 sentences"
    )
    talking.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    talking.set_defaults(handler=_run_talking)

    expressions = sub.add_parser(
        "expressions",
        help="FACS-based emotion sequences in a Florence4D-style per-frame layout",
        description=(
            "Write 10 synthetic identities x 8 emotions (neutral -> apex -> release at 60 fps) as "
            "per-frame PLY meshes, about 0.5 GB; --small writes one identity (~45 MB)."
        ),
    )
    expressions.add_argument("--out", required=True, metavar="DIR", help="output folder")
    expressions.add_argument("--small", action="store_true", help="one identity")
    expressions.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    expressions.set_defaults(handler=_run_expressions)
    return data


def _run_talking(args: argparse.Namespace) -> None:
    from animator.data.talking import generate_talking_set

    generate_talking_set(args.out, small=args.small, seed=args.seed)


def _run_expressions(args: argparse.Namespace) -> None:
    from animator.data.expressions import generate_expression_set

    generate_expression_set(args.out, small=args.small, seed=args.seed)
