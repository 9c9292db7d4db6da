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

#: Subcommands that render frames while a person waits (the viewer), run on the interactive
#: thread policy of avatar/threads.py; `train` paces its own threads.
_INTERACTIVE = ("demo", "view")


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
    _add_demo(sub)
    _add_avatar(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_retarget(sub)
    _add_animate(sub)
    _add_render(sub)
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
    _add_flame_flag(demo)
    demo.set_defaults(handler=_run_demo)


def _add_avatar(sub) -> None:
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
    _add_flame_flag(build)
    build.set_defaults(handler=_run_avatar_build)

    sheet = head_sub.add_parser(
        "sheet", help="render an avatar's contact sheet (views, mouth open/closed, expressions)"
    )
    sheet.add_argument("--avatar", default=None, help="PLY or GaussianAvatars folder")
    sheet.add_argument("--out", default="out/avatar_sheet.png", help="PNG to write")
    sheet.add_argument("--size", type=int, default=512, help="tile size in pixels")
    sheet.add_argument("--backend", default="auto", choices=("auto", "cpu", "gsplat"))
    _add_flame_flag(sheet)
    sheet.set_defaults(handler=_run_avatar_sheet)

    from animator.data.cli import add_data_commands

    add_data_commands(sub)


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
    _add_flame_flag(train)
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
    _add_flame_flag(ev)
    ev.set_defaults(handler=_run_eval)


def _add_retarget(sub) -> None:
    retarget = sub.add_parser(
        "retarget",
        help="fit the animator to your FLAME model (--flame), once; later runs read the cache",
    )
    retarget.add_argument("--checkpoint", default=None, metavar="CKPT", help="default: bundled")
    _add_flame_flag(retarget)
    retarget.set_defaults(handler=_run_retarget)


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
    _add_flame_flag(view)
    view.set_defaults(handler=_run_view)


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
    _add_flame_flag(p)


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
    from animator.metrics import LEGEND, SPEECH_LEGEND, evaluate, evaluate_speech, speech_ablation
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
        path = perf.save(args.out, vertices_of=anim.head if args.vertices else None)
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

        perf, head = load_performance(args.performance, args.audio, flame=args.flame)
    else:
        anim, perf = _performance(args)
        head = anim.head
    avatar = load_avatar(args.avatar, head)
    width = args.width or args.size
    height = args.height or args.size
    if width % 2 or height % 2:
        print(
            f"note: {width}x{height} is padded to even {width + width % 2}x{height + height % 2} for H.264"
        )
    path = export_mp4(
        perf, avatar, args.out, head=head, width=width, height=height, camera=args.camera,
        background=args.background, backend=args.backend, frames_dir=args.frames,
    )  # fmt: skip
    print(f"wrote {path} ({perf.num_frames} frames, {perf.audio.duration:.2f} s with audio)")


def _run_view(args: argparse.Namespace) -> None:
    from viewer.app import ViewerConfig, run_viewer

    config = ViewerConfig(
        audio=args.audio, avatar=args.avatar, checkpoint=args.checkpoint, flame=args.flame,
        host=args.host, port=args.port, mode=args.mode, backend=args.backend,
        render_fps=args.fps, max_side=args.size, allow_origins=tuple(args.allow_origin),
    )  # fmt: skip
    run_viewer(config)


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
