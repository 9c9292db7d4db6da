"""The animator's pieces: audio input, models, basis, FLAME mapping, checkpoints, distributed
training parity, and a tiny end-to-end training run."""

from __future__ import annotations

import socket
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.multiprocessing as mp

from animator.audio import SAMPLE_RATE, load_audio
from animator.checkpoint import load_checkpoint, save_checkpoint
from animator.mapping import fit_flame_mapping
from animator.models import FusionConfig, FusionModule, MotionBasis, SpeechModel, SpeechModelConfig
from animator.train import TrainConfig
from animator.training_data import (
    PHONE_CLASSES,
    Clip,
    Rendition,
    build_renditions,
    crop_batch,
)
from animator.training_stages import rendition_predictions, train_fusion, train_speech_model
from avatar.errors import TalkingAvatarError


# ------------------------------------------------------------------------------- audio
def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize(("fmt", "rate"), [("WAV", 11025), ("FLAC", 44100), ("OGG", 22050)])
def test_audio_formats_and_rates_load_as_16k_mono(tmp_path, fmt, rate) -> None:
    path = tmp_path / f"speech.{fmt.lower()}"
    stereo = np.stack([tone(1.5, rate), tone(1.5, rate)], axis=1)
    sf.write(path, stereo, rate, format=fmt)
    audio = load_audio(path)
    assert audio.samples.ndim == 1 and audio.source_rate == rate
    assert audio.duration == pytest.approx(1.5, abs=0.01)
    assert audio.num_frames(30) == 45 and not audio.is_silent


def test_integer_pcm_arrays_are_scaled_not_clipped() -> None:
    pcm = (tone(0.5, SAMPLE_RATE) * 32768).astype(np.int16)
    audio = load_audio(pcm, SAMPLE_RATE)
    np.testing.assert_allclose(audio.samples, tone(0.5, SAMPLE_RATE), atol=1 / 32768)
    stereo = np.stack([pcm, pcm]).astype(np.int32) * 65536  # [C, N] int32
    assert np.abs(load_audio(stereo, SAMPLE_RATE).samples).max() == pytest.approx(0.3, rel=1e-3)


def test_silence_is_detected(tmp_path) -> None:
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    assert load_audio(path).is_silent


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"RIFF\x00\x00garbage that is not audio" * 10, "cannot read audio file"),
    ],
)
def test_bad_audio_files(tmp_path, content, match) -> None:
    path = tmp_path / "speech.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(TalkingAvatarError, match=match):
        load_audio(path)


def test_header_only_wav_is_refused_as_empty(tmp_path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(TalkingAvatarError, match="holds no audio samples"):
        load_audio(path)


# ------------------------------------------------------------------------------- models
def small_speech_model(num_vertices: int = 10) -> SpeechModel:
    torch.manual_seed(0)
    cfg = SpeechModelConfig(
        num_vertices=num_vertices, num_subjects=3, dim=32, layers=2, heads=2, window=6, components=8
    )
    return SpeechModel(cfg).eval()


def test_speech_model_handles_any_length_in_chunks_exactly() -> None:
    model = small_speech_model()
    mel = torch.randn(1, 2000, 80)  # 20 s at 100 Hz
    full = model(mel, 600)[0]
    for chunk in (50, 128, 333):
        assert (model.predict_long(mel, 600, chunk_frames=chunk) - full).abs().max() < 1e-4


def test_fusion_decoder_is_linear_and_additive_with_fixed_blendshape_size() -> None:
    torch.manual_seed(0)
    fusion = FusionModule(
        FusionConfig(components=8, num_vertices=10, speech_blendshapes=4, expression_blendshapes=3)
    )
    w_a, w_e = torch.randn(5, 4), torch.randn(5, 3)
    both = fusion.decode(w_a, w_e)
    assert torch.allclose(
        both, fusion.decode(w_a, 0 * w_e) + fusion.decode(0 * w_a, w_e), atol=1e-6
    )
    assert torch.allclose(
        fusion.decode(2 * w_a, 0 * w_e), 2 * fusion.decode(w_a, 0 * w_e), atol=1e-6
    )
    rms = fusion.speech_coeffs.norm(dim=1) / (3 * 10) ** 0.5
    assert torch.allclose(rms, torch.full((4,), fusion.cfg.basis_rms))


def test_motion_basis_round_trip_in_span() -> None:
    torch.manual_seed(0)
    frames = torch.randn(40, 3) @ torch.randn(3, 30)  # rank-3 motion of 10 vertices
    basis, kept = MotionBasis.fit(frames.view(40, 10, 3), 4)
    assert kept > 0.999999
    assert torch.allclose(
        basis.decode(basis.encode(frames.view(40, 10, 3))), frames.view(40, 10, 3), atol=1e-4
    )


def test_flame_mapping_recovers_flame_motion(head) -> None:
    p = head.neutral_params(1)
    p.expr[0, :3] = torch.tensor([0.8, -0.5, 0.3])
    smile = head(p)[0] - head.v_template
    q = head.neutral_params(1)
    q.jaw_pose[0, 0] = 0.1
    jaw = head(q)[0] - head.v_template
    mapping, residual = fit_flame_mapping(head, torch.stack([smile, jaw]))
    assert torch.allclose(mapping[0, :3], torch.tensor([0.8, -0.5, 0.3]), atol=1e-3)
    assert abs(float(mapping[1, head.num_expr]) - 0.1) < 0.01  # jaw pitch
    assert residual[0] < 0.01 and residual[1] < 0.2  # mm; the jaw is nonlinear, a secant fits it


# ------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_errors(tmp_path) -> None:
    save_checkpoint(tmp_path / "ck", {"answer": 42}, {"w": torch.arange(6.0)})
    config, tensors = load_checkpoint(tmp_path / "ck")
    assert config["answer"] == 42 and torch.equal(tensors["w"], torch.arange(6.0))
    with pytest.raises(TalkingAvatarError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "ck" / "weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad")
    with pytest.raises(TalkingAvatarError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{]")
    with pytest.raises(TalkingAvatarError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text('{"format": "something-else"}')
    with pytest.raises(TalkingAvatarError, match="not a talking-avatar animator config"):
        load_checkpoint(tmp_path / "ck")


def test_bundled_animator_loads_and_animates(head) -> None:
    from animator import Animator

    anim = Animator.load(head=head)
    audio = tone(2.0, SAMPLE_RATE)
    perf = anim.animate(audio, emotion={"happy": 1.0}, fps=25)
    assert perf.num_frames == 50
    assert perf.params.expr.shape == (50, head.num_expr) and perf.params.jaw_pose.shape == (50, 3)
    quiet = anim.animate(np.zeros(SAMPLE_RATE, dtype=np.float32))
    assert quiet.silent and quiet.speech_weights.abs().max() == 0


# ------------------------------------------------------------------------------- distributed
def synthetic_clips(num: int = 6, frames: int = 45, components: int = 8) -> list[Clip]:
    """Random clips; every other one has two renditions (one of them time-warped)."""
    g = torch.Generator().manual_seed(1)
    clips = []
    for i in range(num):
        clip = Clip(
            coeffs=torch.randn(frames, components, generator=g) * 0.01,
            name=f"s{i % 3}/x{i}",
            subject=f"s{i % 3}",
            label=f"x{i}",
            split="train",
            mel=torch.randn(frames * 10 // 3 + 5, 80, generator=g),
            style=i % 3,
            # viseme labels on half the clips (the others have none: -1 is ignored)
            phones=torch.randint(0, len(PHONE_CLASSES), (frames,), generator=g) if i % 2 else None,
        )
        if i % 2 == 0:
            faster = frames * 10 // 11  # a rendition 1.1 times faster
            clip.renditions = [
                Rendition(mel=torch.randn(frames * 10 // 3 + 5, 80, generator=g).half()),
                Rendition(
                    mel=torch.randn(faster * 10 // 3 + 5, 80, generator=g).half(),
                    coeffs=torch.randn(faster, components, generator=g) * 0.01,
                ),
            ]
        clips.append(clip)
    return clips


TINY = TrainConfig(
    components=8, dim=32, layers=1, heads=2, window=4, stage1_steps=4, stage2_steps=4,
    batch=4, crop_frames=30, val_every=1000, speech_blendshapes=4, expression_blendshapes=3,
)  # fmt: skip


def _train_both(clips: list[Clip]) -> dict[str, torch.Tensor]:
    speech = train_speech_model(clips, TINY, 10, 3, log=lambda *_: None, progress=False)
    inputs = [c.coeffs * 0.5 for c in clips]
    fusion = train_fusion(inputs, clips, clips, TINY, 10, log=lambda *_: None, progress=False)
    state = {f"speech.{k}": v for k, v in speech.state_dict().items()}
    state.update({f"fusion.{k}": v for k, v in fusion.state_dict().items()})
    return state


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        state = _train_both(synthetic_clips())
        if rank == 0:
            torch.save(state, out)
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    single = _train_both(synthetic_clips())
    assert ddp.keys() == single.keys()
    for key in single:
        assert torch.allclose(ddp[key], single[key], atol=1e-5, rtol=1e-4), key
    # and training did move the weights away from their initial values (same seed)
    torch.manual_seed(TINY.seed)
    fresh = SpeechModel(
        SpeechModelConfig(num_vertices=10, num_subjects=3, dim=32, layers=1, heads=2, window=4,
                          components=8, dropout=TINY.dropout,
                          phone_classes=len(PHONE_CLASSES))
    ).state_dict()  # fmt: skip
    assert fresh.keys() == {k[len("speech.") :] for k in single if k.startswith("speech.")}
    moved = [k for k in fresh if (single[f"speech.{k}"] - fresh[k]).abs().max() > 1e-4]
    assert "to_coeffs.weight" in moved and len(moved) > len(fresh) // 2


def test_crops_play_the_clean_clip_and_each_rendition_with_its_own_motion() -> None:
    """A clip whose renditions carry marker features: each crop pairs features and motion of
    one rendition, and all three turn up."""
    frames = 60
    clip = Clip(
        coeffs=torch.zeros(frames, 4),
        name="a/b",
        subject="a",
        label="b",
        split="train",
        mel=torch.zeros(200, 80),
        style=0,
    )
    clip.renditions = [
        Rendition(mel=torch.ones(200, 80).half()),
        Rendition(mel=torch.full((180, 80), 2.0).half(), coeffs=torch.full((54, 4), 2.0)),
    ]
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(30):
        coeffs, mel, _, _ = crop_batch([clip], gen, 4, 30, with_audio=True)
        assert mel.dtype == torch.float32 and mel.shape == (4, 101, 80)
        for c, m in zip(coeffs, mel, strict=True):
            marker = float(m[0, 0])
            seen.add(marker)
            assert float(c[0, 0]) == (2.0 if marker == 2.0 else 0.0)
    assert seen == {0.0, 1.0, 2.0}
    coeffs, mel, _, _ = crop_batch([clip], gen, 8, 30, with_audio=False)
    assert mel is None and coeffs.abs().max() == 0  # motion-only batches ignore renditions


def test_stage_two_hears_each_rendition_against_its_own_motion() -> None:
    """`rendition_predictions` runs the speech model on the first `count` renditions of each
    clip and pairs each output with that rendition's motion (the time-warped one where its
    speed changed), in the clip's style."""

    class MarkerModel:  # stands in for SpeechModel: echoes its input's marker and style
        def eval(self) -> None:
            pass

        def __call__(self, mel, frames, style):
            return torch.full((1, frames, 4), float(mel[0, 0, 0]) + 10.0 * float(style[0]))

        def predict_long(self, mel, frames):
            return torch.full((frames, 4), float(mel[0, 0, 0]) - 100.0)

    def clip(style: int) -> Clip:
        c = Clip(coeffs=torch.zeros(60, 4), name="a/b", subject="a", label="b", split="train",
                 mel=torch.zeros(200, 80), style=style)  # fmt: skip
        c.renditions = [
            Rendition(mel=torch.ones(200, 80).half()),
            Rendition(mel=torch.full((180, 80), 2.0).half(), coeffs=torch.full((54, 4), 2.0)),
            Rendition(mel=torch.full((200, 80), 3.0).half()),
        ]
        return c

    inputs, targets = rendition_predictions(MarkerModel(), [clip(1), clip(-1)], 2)
    assert [float(x[0, 0]) for x in inputs] == [11.0, 12.0, -99.0, -98.0]  # third unheard
    assert [len(x) for x in inputs] == [len(t.coeffs) for t in targets] == [60, 54, 60, 54]
    assert [float(t.coeffs[0, 0]) for t in targets] == [0.0, 2.0, 0.0, 2.0]
    assert all(t.renditions == [] and t.split == "train" for t in targets)
    assert rendition_predictions(MarkerModel(), [clip(1)], 0) == ([], [])


def test_renditions_are_seeded_bounded_and_time_warped() -> None:
    from animator.data.espeak import Voice, synthesize

    utterances = [
        synthesize(text, Voice(voice))
        for text, voice in (("Bob bought a map.", "en-us+m3"), ("Pam moved a boat.", "en+f3"))
    ]
    audio = [load_audio(u.audio, u.sample_rate).samples for u in utterances]
    cfg = replace(TrainConfig(), augment_renditions=4)
    cfg = replace(cfg, augment=replace(cfg.augment, p_speed=1.0, p_codec=0.0))

    def clips() -> list[Clip]:
        return [
            Clip(
                coeffs=torch.arange(round(a.shape[0] / SAMPLE_RATE * 30), dtype=torch.float32)[
                    :, None
                ].repeat(1, 3),
                name=f"s{i}/x",
                subject=f"s{i}",
                label="x",
                split="train",
            )
            for i, a in enumerate(audio)
        ]

    first, again = clips(), clips()
    held = build_renditions(first, audio, cfg, log=lambda *_: None)
    build_renditions(again, audio, cfg, log=lambda *_: None)
    expected = 0
    for clip, twin in zip(first, again, strict=True):
        assert len(clip.renditions) == 4
        for r, r2 in zip(clip.renditions, twin.renditions, strict=True):
            assert torch.equal(r.mel, r2.mel) and r.steps == r2.steps
            assert r.mel.dtype == torch.float16
            expected += r.mel.numel() * 2 + (0 if r.coeffs is None else r.coeffs.numel() * 4)
            speed = r.speed
            assert r.steps[0] == f"speed {speed:.2f}"
            if r.coeffs is None:
                assert speed == 1.0
                continue
            # the motion is warped by the speed: frame i shows source frame i * speed (held at
            # the last frame past the end)
            assert r.coeffs.shape[0] == max(1, round(clip.num_frames / speed))
            source = (torch.arange(r.coeffs.shape[0]) * speed).clamp(max=clip.num_frames - 1)
            torch.testing.assert_close(r.coeffs[:, 0], source, atol=1e-4, rtol=0)
            # features and motion still last the same: 100 Hz features vs 30 fps motion
            assert abs(r.mel.shape[0] / 100 - r.coeffs.shape[0] / 30) < 0.05
    assert held == expected


# ------------------------------------------------------------------------------- idle layer
def test_blinks_every_2_to_6_s_lasting_150_to_300_ms() -> None:
    from animator.idle import blink_curve

    times = np.arange(0, 120, 1 / 1000)  # 1 kHz over two minutes
    closed = blink_curve(times, np.random.default_rng(3)) > 0
    edges = np.flatnonzero(np.diff(closed.astype(int)))
    starts, ends = times[edges[::2] + 1], times[edges[1::2] + 1]
    durations = ends - starts[: len(ends)]
    gaps = np.diff(starts)
    assert len(starts) >= 120 / 6.3
    assert durations.min() >= 0.149 and durations.max() <= 0.301
    assert gaps.min() >= 2.0 and gaps.max() <= 6.0 + 0.301


def test_idle_layer_is_seeded_and_moves_lids_eyes_and_head(head) -> None:
    from animator.idle import idle_layer

    base = head.neutral_params(300)
    a = idle_layer(head, 300, 30.0, seed=5).apply(base)
    b = idle_layer(head, 300, 30.0, seed=5).apply(base)
    c = idle_layer(head, 300, 30.0, seed=6).apply(base)
    assert torch.equal(a.expr, b.expr) and torch.equal(a.neck_pose, b.neck_pose)
    assert not torch.equal(a.neck_pose, c.neck_pose)
    assert a.expr.abs().max() > 0.1  # blinks (10 s: at least one)
    assert 0.005 < a.neck_pose.abs().max() < 0.06 and a.eyes_pose.abs().max() > 0.005
    assert base.expr.abs().max() == 0  # the input is not modified


def test_idle_layer_of_some_frames_is_those_frames_of_the_clip(head) -> None:
    """The viewer adds frame i's slice of the layer; export adds the whole layer: the same."""
    from animator.idle import idle_layer

    params = head.neutral_params(120)
    params.expr[:, 0] = torch.linspace(-1, 1, 120)
    layer = idle_layer(head, 120, 30.0, seed=3)
    whole = layer.apply(params)
    for i, j in ((0, 1), (37, 38), (50, 90), (119, 120)):
        part = layer.frames(i, j).apply(params.slice(i, j))
        for name in ("expr", "eyes_pose", "neck_pose", "jaw_pose"):
            assert torch.equal(getattr(part, name), getattr(whole.slice(i, j), name))
    none = idle_layer(head, 120, 30.0, seed=3, blinks=False, head_motion=False)
    assert not none.expr.any() and not none.eyes_pose.any() and not none.neck_pose.any()


def test_unseen_sentence_and_voice_close_on_bilabials_and_open_on_vowels(head) -> None:
    """The bundled sample is neither a training sentence nor a training voice setting."""
    import json

    from animator import Animator
    from animator.data.lips import inner_lip_gap
    from avatar.paths import asset_path

    anim = Animator.load(head=head)
    timings = json.loads(asset_path("speech", "sample.json").read_text())["phonemes"]
    perf = anim.animate(asset_path("speech", "sample.wav"), fps=30, idle=False)
    verts = head(perf.params).numpy()
    gap = 1000 * inner_lip_gap(
        verts,
        head.region("lip_upper_inner"),
        head.region("lip_lower_inner"),
        anchors=head.region("teeth_upper"),
        reference=head.v_template.numpy(),
    )  # [T] mm
    spans = [(p["phoneme"], int(p["start"] * 30), int(np.ceil(p["end"] * 30)) + 1) for p in timings]
    bilabial = np.array([gap[a:b].min() for s, a, b in spans if s in ("p", "b", "m")])
    vowels = np.array(
        [gap[a:b].max() for s, a, b in spans if s in ("aI", "a#", "a", "A:", "0", "O:")]
    )
    assert len(bilabial) >= 10 and len(vowels) >= 10
    assert np.median(bilabial) < 1.0 and bilabial.max() < 4.0  # lips meet on p, b, m
    assert vowels.min() > 6.0  # and open on open vowels


def test_eval_table_on_a_small_held_out_set(head, tmp_path) -> None:
    from animator.animator import BUNDLED_ANIMATOR
    from animator.data.expressions import generate_expression_set
    from animator.data.talking import generate_talking_set
    from animator.metrics import evaluate

    generate_talking_set(tmp_path / "talking", small=True, head=head, progress=False, log=None)
    generate_expression_set(tmp_path / "expr", small=True, head=head, progress=False, log=None)
    rows, table = evaluate(
        BUNDLED_ANIMATOR, tmp_path / "talking", tmp_path / "expr", head=head, log=lambda *_: None
    )
    by = {r["method"]: r for r in rows}
    ours, template = by["fusion + sparsity (ours)"], by["static template"]
    assert ours["lve"] < 0.6 * template["lve"]  # a talking face beats a still one on unseen speech
    assert 0 <= ours["speech_leak"] < 10 and ours["closure"] < 0.6
    assert table.startswith("| method | LVE (mm^2) |") and "n/a" in table
