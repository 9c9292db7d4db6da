"""The animator's subcommands of the console script (`viewer.cli`): `train`, `eval` and
`retarget`, each a thin shell over one library function.
"""

from __future__ import annotations

import argparse

from avatar.errors import TalkingAvatarError
from viewer.cli_avatar import add_flame_flag


def add_animator_commands(sub) -> None:
    """Add `train`, `eval` and `retarget` to a top-level `add_subparsers()` object."""
    _add_train(sub)
    _add_eval(sub)
    _add_retarget(sub)


def _add_train(sub) -> None:
    train = sub.add_parser(
        "train",
        help="train the animator (speech model, fusion blendshapes, emotions, FLAME mapping)",
        description="Train on a VOCAset-format talking set and a Florence4D-format expression set. "
        "Runs on several processes with torchrun --nproc_per_node=N (gloo on CPU, NCCL on GPU).",
    )
    train.add_argument("--talking", required=True, metavar="DIR", help="VOCAset-format folder")
    train.add_argument("--expressions", required=True, metavar="DIR", help="expression set folder")
    train.add_argument("--out", required=True, metavar="CKPT", help="checkpoint folder to write")
    train.add_argument("--resume", default=None, metavar="CKPT", help="reuse finished stages")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per process (default: the cores other processes leave free, "
        "re-read every 5 s)",
    )
    train.add_argument("--stage1-steps", type=int, default=None)
    train.add_argument("--stage2-steps", type=int, default=None)
    train.add_argument("--batch", type=int, default=None, help="global batch (all processes)")
    train.add_argument("--sparsity", type=float, default=None, help="weight of the sparsity loss")
    train.add_argument("--speech-blendshapes", type=int, default=None, help="K_A")
    train.add_argument("--expression-blendshapes", type=int, default=None, help="K_E")
    train.add_argument(
        "--augment",
        type=int,
        default=None,
        metavar="N",
        help="augmented renditions per training clip besides the clean one (default 3; 0: none)",
    )
    train.add_argument(
        "--phone-weight", type=float, default=None, metavar="W",
        help="weight of the auxiliary viseme classification in stage 1 (0: off)",
    )  # fmt: skip
    train.add_argument(
        "--gap-weight", type=float, default=None, metavar="W",
        help="weight of the inner-lip gap loss in stage 1 (0: off)",
    )  # fmt: skip
    train.add_argument(
        "--fusion-renditions", type=int, default=None, metavar="N",
        help="augmented renditions per clip that stage 2 also learns from (default 3; 0: clean only)",
    )  # fmt: skip
    add_flame_flag(train)
    train.set_defaults(handler=_run_train)


def _add_eval(sub) -> None:
    ev = sub.add_parser(
        "eval", help="evaluate an animator on held-out speakers: LVE, FDD, closure, leak, ..."
    )
    ev.add_argument("--checkpoint", default=None, metavar="CKPT", help="default: the bundled one")
    ev.add_argument("--talking", default=None, metavar="DIR", help="VOCAset-format folder")
    ev.add_argument("--expressions", default=None, metavar="DIR", help="expression set folder")
    ev.add_argument(
        "--speech", default=None, metavar="DIR",
        help="recordings with phone timings (<clip>.wav + <clip>.json): lip-sync measures",
    )  # fmt: skip
    ev.add_argument(
        "--ablation", default=None, metavar="CKPT", help="fusion trained without sparsity"
    )
    ev.add_argument("--split", default="test", choices=("train", "val", "test"))
    ev.add_argument("--out", default=None, metavar="MD", help="also write the table to this file")
    add_flame_flag(ev)
    ev.set_defaults(handler=_run_eval)


def _add_retarget(sub) -> None:
    retarget = sub.add_parser(
        "retarget",
        help="fit the animator to your FLAME model (--flame), once; later runs read the cache",
    )
    retarget.add_argument("--checkpoint", default=None, metavar="CKPT", help="default: bundled")
    add_flame_flag(retarget)
    retarget.set_defaults(handler=_run_retarget)


def _run_train(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from animator.train import TrainConfig, train
    from avatar.atomic import check_output_path
    from avatar.flame import load_flame

    check_output_path(args.out, what="--out", folder=True)  # before reading any data

    overrides = {
        "seed": args.seed,
        "stage1_steps": args.stage1_steps,
        "stage2_steps": args.stage2_steps,
        "batch": args.batch,
        "sparsity": args.sparsity,
        "speech_blendshapes": args.speech_blendshapes,
        "expression_blendshapes": args.expression_blendshapes,
        "augment_renditions": args.augment,
        "phone_weight": args.phone_weight,
        "gap_weight": args.gap_weight,
        "fusion_renditions": args.fusion_renditions,
    }
    cfg = replace(TrainConfig(), **{k: v for k, v in overrides.items() if v is not None})
    train(
        args.talking,
        args.expressions,
        args.out,
        cfg,
        resume=args.resume,
        head=load_flame(args.flame),
        threads=args.threads,
    )


def _run_eval(args: argparse.Namespace) -> None:
    import shlex
    import sys

    from animator import Animator
    from animator.animator import BUNDLED_ANIMATOR
    from animator.metrics import LEGEND, evaluate
    from animator.speech_eval import SPEECH_LEGEND, evaluate_speech, speech_ablation
    from avatar.atomic import atomic_write_text, check_output_path
    from avatar.flame import load_flame

    synthetic = args.talking is not None or args.expressions is not None
    if synthetic and (args.talking is None or args.expressions is None):
        raise TalkingAvatarError("eval needs both --talking DIR and --expressions DIR")
    if not synthetic and args.speech is None:
        raise TalkingAvatarError("eval needs --talking DIR and --expressions DIR, or --speech DIR")
    if args.out:
        check_output_path(args.out, what="--out")
    checkpoint = args.checkpoint or BUNDLED_ANIMATOR
    head = load_flame(args.flame)
    sections = []
    if synthetic:
        _, table = evaluate(
            checkpoint, args.talking, args.expressions, ablation=args.ablation, head=head,
            split=args.split,
        )  # fmt: skip
        sections.append(f"## Held-out synthetic speakers\n\n{table}\n\n{LEGEND}")
    if args.speech is not None:
        anim = Animator.load(checkpoint, head=head)
        _, _, table = evaluate_speech(anim, args.speech)
        ablation = speech_ablation(anim, args.speech)
        sections.append(
            f"## Real speech ({args.speech})\n\n{SPEECH_LEGEND}\n{table}\n\n"
            f"### What the rules on top of the additive model do (medians over speakers)\n\n"
            f"{ablation}\n\nWhich training choices (audio features, the viseme classifier and its "
            f"weight, augmentation, the gap loss) made the speech model hold on real voices, run "
            f"by run on this set: docs/lipsync_ablation.md."
        )
    report = "\n\n".join(sections)
    print(report)
    if args.out:
        command = "talking-avatar " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        path = atomic_write_text(args.out, f"Made by `{command}`.\n\n{report}\n")
        print(f"wrote {path}")


def _run_retarget(args: argparse.Namespace) -> None:
    from animator.retarget import describe, retarget_animator
    from avatar.flame import load_flame

    rt, path = retarget_animator(load_flame(args.flame), args.checkpoint)
    print(describe(rt))
    print(f"wrote {path} (read automatically whenever --flame names this model)")
