"""The `talking-avatar` console script: one subcommand per library function, nothing more.

Each subcommand parses its flags here and calls a library function, imported lazily so that
`talking-avatar --help` is instant. A `TalkingAvatarError` (a user's mistake) is printed as one
line and exits with status 2; argparse's own usage errors exit 2 as well.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from avatar.errors import TalkingAvatarError

Handler = Callable[[argparse.Namespace], int | None]


def _add_flame_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--flame",
        metavar="PATH",
        default=None,
        help="a FLAME-format model (.pkl, e.g. FLAME2023 generic_model.pkl, or the bundled head's "
        ".npz); default: $TALKING_AVATAR_FLAME, else the bundled head",
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talking-avatar",
        description="Make a 3D Gaussian head avatar speak any audio with the emotions you choose.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="run the main job on the embedded defaults")
    demo.add_argument("--out", default="out", help="output folder (default: out)")
    _add_flame_flag(demo)
    demo.set_defaults(handler=_run_demo)

    head = sub.add_parser("avatar", help="the head model and avatars: inspect, export")
    head_sub = head.add_subparsers(dest="avatar_command", metavar="ACTION", required=True)
    export = head_sub.add_parser(
        "export-flame",
        help="write the head as smplx-loadable FLAME_NEUTRAL.pkl + flame_static_embedding.pkl",
    )
    export.add_argument("out_dir", metavar="DIR", help="folder to write into (created if needed)")
    _add_flame_flag(export)
    export.set_defaults(handler=_run_export_flame)

    info = head_sub.add_parser("info", help="print a head model's sizes, joints and regions")
    _add_flame_flag(info)
    info.set_defaults(handler=_run_avatar_info)

    preview = head_sub.add_parser(
        "preview", help="render the head (neutral, jaw open, expression sweep) to a PNG"
    )
    preview.add_argument("--out", default="out/head_preview.png", help="PNG to write")
    preview.add_argument("--size", type=int, default=256, help="tile size in pixels")
    _add_flame_flag(preview)
    preview.set_defaults(handler=_run_head_preview)
    return parser


def _run_demo(args: argparse.Namespace) -> None:
    from pathlib import Path

    from avatar.flame.preview import write_head_preview

    path = write_head_preview(Path(args.out) / "head_preview.png", flame=args.flame)
    print(f"wrote {path}")


def _run_export_flame(args: argparse.Namespace) -> None:
    from avatar.flame import load_flame
    from avatar.flame.export import export_smplx_folder

    written = export_smplx_folder(load_flame(args.flame), args.out_dir)
    for path in written:
        print(f"wrote {path}")


def _run_avatar_info(args: argparse.Namespace) -> None:
    from avatar.flame import load_flame

    print(load_flame(args.flame).describe())


def _run_head_preview(args: argparse.Namespace) -> None:
    from avatar.flame.preview import write_head_preview

    path = write_head_preview(args.out, flame=args.flame, tile=args.size)
    print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.handler(args)
    except TalkingAvatarError as err:
        print(f"talking-avatar: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("talking-avatar: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
