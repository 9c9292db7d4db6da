"""The `avatar` subcommands of the console script (`viewer.cli`): the head model and avatars,
inspected, rendered, built and exported; and the --flame flag every command takes.
"""

from __future__ import annotations

import argparse


def add_flame_flag(parser: argparse.ArgumentParser) -> None:
    """The --flame flag every command that loads the head takes."""
    parser.add_argument(
        "--flame",
        metavar="PATH",
        default=None,
        help="a FLAME-format model (.pkl, e.g. FLAME2023 generic_model.pkl, or the bundled head's "
        ".npz); default: $TALKING_AVATAR_FLAME, else the bundled head",
    )


def add_avatar_commands(sub) -> None:
    """Add `avatar export-flame|info|preview|build|sheet` to a top-level `add_subparsers()`."""
    head = sub.add_parser("avatar", help="the head model and avatars: inspect, export")
    head_sub = head.add_subparsers(dest="avatar_command", metavar="ACTION", required=True)
    export = head_sub.add_parser(
        "export-flame",
        help="write the head as smplx-loadable FLAME_NEUTRAL.pkl + flame_static_embedding.pkl",
    )
    export.add_argument("out_dir", metavar="DIR", help="folder to write into (created if needed)")
    add_flame_flag(export)
    export.set_defaults(handler=_run_export_flame)

    info = head_sub.add_parser("info", help="print a head model's sizes, joints and regions")
    add_flame_flag(info)
    info.set_defaults(handler=_run_avatar_info)

    preview = head_sub.add_parser(
        "preview", help="render the head (neutral, jaw open, expression sweep) to a PNG"
    )
    preview.add_argument("--out", default="out/head_preview.png", help="PNG to write")
    preview.add_argument("--size", type=int, default=256, help="tile size in pixels")
    add_flame_flag(preview)
    preview.set_defaults(handler=_run_head_preview)

    build = head_sub.add_parser(
        "build", help="build a Gaussian avatar from the head (the default avatar's recipe)"
    )
    build.add_argument("--out", default="assets/avatar/avatar.ply", help="PLY to write")
    build.add_argument("--count", type=int, default=40_000, help="number of Gaussians")
    build.add_argument("--skin", default="medium", help="light|medium|tan|brown|dark or #rrggbb")
    build.add_argument("--hair", default="brown", help="black|brown|auburn|blond|grey or #rrggbb")
    build.add_argument("--iris", default="brown", help="brown|blue|green|grey or #rrggbb")
    build.add_argument("--lips", default=None, help="#rrggbb (default: from the skin tone)")
    build.add_argument("--seed", type=int, default=0)
    add_flame_flag(build)
    build.set_defaults(handler=_run_avatar_build)

    sheet = head_sub.add_parser(
        "sheet", help="render an avatar's contact sheet (views, mouth open/closed, expressions)"
    )
    sheet.add_argument("--avatar", default=None, help="PLY or GaussianAvatars folder")
    sheet.add_argument("--out", default="out/avatar_sheet.png", help="PNG to write")
    sheet.add_argument("--size", type=int, default=512, help="tile size in pixels")
    sheet.add_argument("--backend", default="auto", choices=("auto", "cpu", "gsplat"))
    add_flame_flag(sheet)
    sheet.set_defaults(handler=_run_avatar_sheet)


def _run_avatar_build(args: argparse.Namespace) -> None:
    from avatar.builder import build_default_avatar, scheme_from_options
    from avatar.flame import load_flame
    from avatar.ply import write_ply

    scheme = scheme_from_options(skin=args.skin, hair=args.hair, iris=args.iris, lips=args.lips)
    avatar = build_default_avatar(
        load_flame(args.flame), count=args.count, scheme=scheme, seed=args.seed
    )
    write_ply(args.out, avatar)
    print(f"wrote {args.out} ({len(avatar.binding)} Gaussians)")


def _run_avatar_sheet(args: argparse.Namespace) -> None:
    from avatar.sheet import write_contact_sheet

    path = write_contact_sheet(
        args.out, avatar=args.avatar, flame=args.flame, size=args.size, backend=args.backend
    )
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
