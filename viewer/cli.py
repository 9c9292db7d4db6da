"""The `talking-avatar` console script: one subcommand per library function, nothing more.

Each subcommand parses its flags and calls a library function, imported lazily so that
`talking-avatar --help` is instant. `demo` and `view` live here; the other groups in their own
modules: `viewer.cli_avatar` (avatar, and the --flame flag), `viewer.cli_animator` (train, eval,
retarget), `viewer.cli_perform` (animate, render), `animator.data.cli` (data). A `TalkingAvatarError` (a user's mistake) is printed as one
line and exits with status 2; argparse's own usage errors exit 2 as well.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from avatar.errors import TalkingAvatarError
from viewer.cli_animator import add_animator_commands
from viewer.cli_avatar import add_avatar_commands, add_flame_flag
from viewer.cli_perform import add_performance_commands

Handler = Callable[[argparse.Namespace], int | None]

#: Subcommands that render frames while a person waits (the viewer), run on the interactive
#: thread policy of avatar/threads.py; `train` paces its own threads.
_INTERACTIVE = ("demo", "view")


def _build_parser() -> argparse.ArgumentParser:
    from animator.data.cli import add_data_commands  # imports animator: not at module level

    parser = argparse.ArgumentParser(
        prog="talking-avatar",
        description="Make a 3D Gaussian head avatar speak any audio with the emotions you choose.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(sub)
    add_avatar_commands(sub)
    add_data_commands(sub)
    add_animator_commands(sub)
    add_performance_commands(sub)
    _add_view(sub)
    return parser


def _add_demo(sub) -> None:
    demo = sub.add_parser("demo", help="run the main job on the embedded defaults")
    demo.add_argument("--out", default="out", help="output folder (default: out)")
    demo.add_argument(
        "--no-view", action="store_true", help="write the pictures and the MP4, then stop"
    )
    demo.add_argument("--port", type=int, default=8080, help="the viewer's port (default 8080)")
    demo.add_argument("--size", type=int, default=512, help="video size in pixels (default 512)")
    add_flame_flag(demo)
    demo.set_defaults(handler=_run_demo)


def _add_view(sub) -> None:
    view = sub.add_parser(
        "view", help="open the avatar in the browser: play speech, move emotions, record, export"
    )
    view.add_argument("--audio", default=None, metavar="SPEECH", help="default: bundled sample")
    view.add_argument("--avatar", default=None, help="PLY or GaussianAvatars folder")
    view.add_argument("--checkpoint", default=None, metavar="CKPT", help="default: bundled")
    view.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    view.add_argument("--port", type=int, default=8080)
    view.add_argument(
        "--mode", default="image", choices=("image", "splats"),
        help="image: the server renders frames (any browser); splats: the browser's GPU draws",
    )  # fmt: skip
    view.add_argument("--backend", default="auto", choices=("auto", "cpu", "gsplat"))
    view.add_argument("--fps", type=float, default=25.0, help="target frames per second per tab")
    view.add_argument("--size", type=int, default=512, help="longest image side when still")
    view.add_argument(
        "--allow-origin", action="append", default=[], metavar="ORIGIN",
        help="also let pages from this origin connect (scheme://host:port, e.g. a reverse "
        "proxy); repeatable. Default: only the viewer's own page",
    )  # fmt: skip
    add_flame_flag(view)
    view.set_defaults(handler=_run_view)


def _run_demo(args: argparse.Namespace) -> None:
    """The embedded defaults end to end: head preview, avatar sheet, a talking MP4, and then
    the browser viewer (unless --no-view)."""
    from pathlib import Path

    from animator import Animator
    from animator.emotion import EmotionTrack
    from avatar.avatars import load_avatar
    from avatar.flame.preview import write_head_preview
    from avatar.paths import asset_path
    from avatar.sheet import write_contact_sheet
    from viewer.export import export_mp4

    if not args.no_view:  # a busy port should stop us now, not after the renders
        from viewer.app import check_port_free

        check_port_free("127.0.0.1", args.port)
    out = Path(args.out)
    anim = Animator.load(flame=args.flame)  # first: a retarget gives the head its regions
    print(f"wrote {write_head_preview(out / 'head_preview.png', flame=args.flame)}")
    print(f"wrote {write_contact_sheet(out / 'avatar_sheet.png', model=anim.head)}")
    speech = asset_path("speech", "sample.wav")
    track = EmotionTrack.load(asset_path("speech", "demo_track.json"))
    perf = anim.animate(speech, track)
    avatar = load_avatar(None, anim.head)
    size = args.size
    path = export_mp4(perf, avatar, out / "demo.mp4", head=anim.head, width=size, height=size)
    print(f"wrote {path} (the sample speech, neutral -> happy -> sad -> surprised)")
    if not args.no_view:
        from viewer.app import ViewerConfig, run_viewer

        run_viewer(ViewerConfig(flame=args.flame, port=args.port))


def _run_view(args: argparse.Namespace) -> None:
    from viewer.app import ViewerConfig, run_viewer

    config = ViewerConfig(
        audio=args.audio, avatar=args.avatar, checkpoint=args.checkpoint, flame=args.flame,
        host=args.host, port=args.port, mode=args.mode, backend=args.backend,
        render_fps=args.fps, max_side=args.size, allow_origins=tuple(args.allow_origin),
    )  # fmt: skip
    run_viewer(config)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command in _INTERACTIVE:
        from avatar.threads import configure_interactive

        configure_interactive()  # before anything imports torch: see avatar/threads.py
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
