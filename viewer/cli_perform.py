"""The performance subcommands of the console script (`viewer.cli`): `animate` (speech and
emotions to FLAME parameters or ARKit curves) and `render` (to an MP4 with sound).
"""

from __future__ import annotations

import argparse

from avatar.errors import TalkingAvatarError
from viewer.cli_avatar import add_flame_flag


def add_performance_commands(sub) -> None:
    """Add `animate` and `render` to a top-level `add_subparsers()` object."""
    _add_animate(sub)
    _add_render(sub)


def _add_animate(sub) -> None:
    anim = sub.add_parser(
        "animate",
        help="speech (+ emotions) -> a performance (.npz of FLAME params) or ARKit-52 curves",
    )
    _add_performance_flags(anim)
    anim.add_argument(
        "--out", required=True, metavar="OUT",
        help="file to write, by its suffix: .npz (the performance: FLAME params), or ARKit-52 "
        "curves fitted to it: .csv (Live Link Face), .json, .glb (the head, animated)",
    )  # fmt: skip
    anim.add_argument(
        "--vertices", action="store_true", help="also store the head's vertices (.npz only)"
    )
    anim.set_defaults(handler=_run_animate)


def _add_render(sub) -> None:
    rend = sub.add_parser("render", help="speech (+ emotions) -> an MP4 of the avatar with sound")
    _add_performance_flags(rend)
    rend.add_argument(
        "--performance", default=None, metavar="PERF.npz", help="use a saved performance"
    )
    rend.add_argument(
        "--avatar", default=None, help="PLY or GaussianAvatars folder (default avatar)"
    )
    rend.add_argument("--size", type=int, default=512, help="square video size (default 512)")
    rend.add_argument("--width", type=int, default=None)
    rend.add_argument("--height", type=int, default=None)
    rend.add_argument("--camera", default="front", help="front|three-quarter|side|orbit")
    rend.add_argument("--background", default="white", help="white|black|grey|#rrggbb|r,g,b")
    rend.add_argument("--backend", default="auto", choices=("auto", "cpu", "gsplat"))
    rend.add_argument("--frames", default=None, metavar="DIR", help="also write PNG frames here")
    rend.add_argument("--out", required=True, metavar="OUT.mp4")
    rend.set_defaults(handler=_run_render)


def _add_performance_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio", required=True, metavar="SPEECH", help="wav, flac, mp3 or ogg")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--emotion", action="append", default=[], metavar="LABEL=X",
        help="emotion and intensity in [0, 1], repeatable: --emotion happy=0.8 --emotion sad=0.2",
    )  # fmt: skip
    group.add_argument("--track", default=None, metavar="TRACK.json", help="timed emotion keys")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the idle layer")
    p.add_argument("--no-idle", action="store_true", help="no blinks, eye or head motion")
    p.add_argument("--checkpoint", default=None, metavar="CKPT", help="animator (default: bundled)")
    add_flame_flag(p)


def _performance(args: argparse.Namespace, *, check_head=None):
    """The animator and its performance for the flags; `check_head(head)` runs once the
    animator has its head (retargeted if need be), before the speech is analysed."""
    from animator import Animator
    from animator.emotion import EmotionTrack, as_track, parse_mix_args

    emotion = (
        EmotionTrack.load(args.track) if args.track else as_track(parse_mix_args(args.emotion))
    )
    anim = Animator.load(args.checkpoint, flame=args.flame)
    if check_head is not None:
        check_head(anim.head)
    perf = anim.animate(args.audio, emotion, fps=args.fps, idle=not args.no_idle, seed=args.seed)
    if perf.silent:
        print(f"{args.audio}: no speech found (silent audio); the mouth stays closed and neutral")
    return anim, perf


def _run_animate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from avatar.atomic import check_output_path
    from avatar.flame.arkit import arkit_columns
    from avatar.flame.arkit_export import SUPPORTED_SUFFIXES, write_arkit

    check_output_path(args.out, what="--out")  # before the slow work
    suffix = Path(args.out).suffix.lower()
    if suffix not in (".npz", *SUPPORTED_SUFFIXES):
        kind = f"unknown file type '{suffix}'" if suffix else "no file type"
        raise TalkingAvatarError(
            f"--out {args.out}: {kind}; use .npz (the performance), .csv (Live Link Face), "
            ".json or .glb (ARKit-52 curves)"
        )
    if args.vertices and suffix != ".npz":
        raise TalkingAvatarError(f"--vertices applies to an .npz performance, not {suffix}")
    # A head without ARKit units fails before the speech is analysed, not after.
    anim, perf = _performance(args, check_head=arkit_columns if suffix != ".npz" else None)
    what = f"{perf.num_frames} frames at {perf.fps:g} fps, {perf.audio.duration:.2f} s"
    if suffix == ".npz":
        path = perf.save(args.out, vertices=args.vertices)
        print(f"wrote {path} ({what})")
        return
    curves = write_arkit(perf, anim.head, args.out)
    print(f"wrote {args.out} ({what}); {curves.describe_error()}")


def _run_render(args: argparse.Namespace) -> None:
    from avatar.atomic import check_output_path
    from avatar.avatars import load_avatar
    from avatar.paths import ensure_folder
    from viewer.export import export_mp4

    check_output_path(args.out, what="--out")  # before the slow work
    if args.frames:
        ensure_folder(args.frames)

    if args.performance:
        from animator.animator import load_performance

        perf = load_performance(args.performance, args.audio, flame=args.flame)
    else:
        _, perf = _performance(args)
    avatar = load_avatar(args.avatar, perf.head)
    width = args.width or args.size
    height = args.height or args.size
    if width % 2 or height % 2:
        print(
            f"note: {width}x{height} is padded to even {width + width % 2}x{height + height % 2} for H.264"
        )
    path = export_mp4(
        perf, avatar, args.out, width=width, height=height, camera=args.camera,
        background=args.background, backend=args.backend, frames_dir=args.frames,
    )  # fmt: skip
    print(f"wrote {path} ({perf.num_frames} frames, {perf.audio.duration:.2f} s with audio)")
