"""The stand-in talking set: VOCAset format on disk, and the ground truth it promises."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from animator.data import load_vocaset
from animator.data.driving import face_unit_vertices
from animator.data.face_units import FACE_UNIT_NAMES
from animator.data.talking import (
    generate_talking_set,
    lip_gap,
    make_speakers,
    sentence_plan,
    synthesize_clip,
)
from animator.data.visemes import viseme_of
from animator.data.voices import SPLITS
from avatar.errors import TalkingAvatarError

SEED = 7


@pytest.fixture(scope="module")
def speakers(head) -> list:
    return make_speakers(head, SEED)


@pytest.fixture(scope="module")
def talking_set(tmp_path_factory, head) -> Path:
    out = tmp_path_factory.mktemp("talking")
    generate_talking_set(out, small=True, seed=SEED, head=head, progress=False, log=None)
    return out


def test_written_in_vocaset_layout(talking_set: Path) -> None:
    for name in ("data_verts.npy", "templates.pkl", "raw_audio_fixed.pkl", "subj_seq_to_idx.pkl"):
        assert (talking_set / name).is_file()
    dataset = load_vocaset(talking_set)
    assert dataset.layout == "released"
    assert len(dataset) == 6
    assert {s.split for s in dataset} == {"train", "val", "test"}
    sample = dataset[0]
    assert isinstance(sample.vertices, np.memmap)
    assert (
        sample.vertices.dtype == np.float32 and sample.vertices.shape[1:] == sample.template.shape
    )
    assert sample.timings and sample.timings[0].start == 0.0


def test_audio_and_motion_last_the_same(talking_set: Path) -> None:
    for sample in load_vocaset(talking_set):
        audio_s = sample.audio.shape[0] / sample.sample_rate
        assert abs(audio_s - sample.duration) <= 1.0 / sample.fps
        assert sample.timings[-1].end == pytest.approx(audio_s, abs=1e-4)


def test_lips_close_in_bilabials_and_open_in_open_vowels(talking_set: Path, head) -> None:
    closed_frames = open_vowels = 0
    for sample in load_vocaset(talking_set):
        gap = lip_gap(np.asarray(sample.vertices), head, sample.template)  # [T] metres
        times = np.arange(sample.num_frames) / sample.fps
        for span in sample.timings:
            viseme = viseme_of(span.label)
            if viseme == "bilabial":
                inside = (times >= span.start) & (times < span.end)
                closed_frames += int(inside.sum())
                assert np.all(gap[inside] < 0.001), (sample.subject, sample.sentence, span)
            elif viseme == "open" and span.end - span.start >= 0.06:
                centre = int(round(0.5 * (span.start + span.end) * sample.fps))
                open_vowels += 1
                assert gap[centre] > 0.005, (sample.subject, sample.sentence, span)
    assert closed_frames > 30 and open_vowels > 10


def test_rest_pose_lips_closed_for_every_speaker(head, speakers) -> None:
    for speaker in speakers:
        from animator.data.driving import identity_template

        template = identity_template(head, speaker.shape)
        assert lip_gap(template[None], head, template)[0] < 0.001


def test_deterministic_from_the_seed(talking_set: Path, head, speakers) -> None:
    speaker = speakers[0]
    sentence, text = sentence_plan(speaker)[1]
    clip = synthesize_clip(speaker, sentence, text, SEED)
    again = synthesize_clip(speaker, sentence, text, SEED)
    np.testing.assert_array_equal(clip.face_units, again.face_units)
    np.testing.assert_array_equal(clip.neck_pose, again.neck_pose)
    assert clip.phonemes == again.phonemes
    assert clip.audio.shape == again.audio.shape  # noise samples may differ (see espeak.py)
    stored = load_vocaset(talking_set).sample(speaker.name, sentence)
    vertices = face_unit_vertices(head, speaker.shape, clip.face_units, neck_pose=clip.neck_pose)
    np.testing.assert_allclose(np.asarray(stored.vertices), vertices, atol=1e-6)
    other = make_speakers(head, SEED + 1, small=True)[0]
    assert not np.allclose(other.shape, speaker.shape)
    small = make_speakers(head, SEED, small=True)
    full = [next(s for s in speakers if s.split == split) for split in SPLITS]
    for a, b in zip(small, full, strict=True):
        assert (a.name, a.voice, a.sentences, a.style) == (b.name, b.voice, b.sentences, b.style)
        np.testing.assert_array_equal(a.shape, b.shape)


def test_many_speakers_few_sentences_and_held_out_voices_and_text(speakers) -> None:
    from animator.data.talking import SENTENCES_PER_SPEAKER, SPEAKERS_PER_VOICE
    from animator.data.voices import get_engine

    by_split = {split: [s for s in speakers if s.split == split] for split in SPLITS}
    assert len(by_split["train"]) >= 150 and len(by_split["val"]) >= 8
    assert len(by_split["test"]) >= 16
    assert len({s.name for s in speakers}) == len(speakers)
    assert len({(s.voice, tuple(s.shape)) for s in speakers}) == len(speakers)
    assert len({s.style.jaw_ratio for s in speakers}) == len(speakers)
    timbres = {split: {s.timbre for s in group} for split, group in by_split.items()}
    assert not timbres["train"] & (timbres["val"] | timbres["test"])
    assert not timbres["val"] & timbres["test"]
    for split, group in by_split.items():
        for engine in {s.engine for s in group}:
            mine = [s for s in group if s.engine == engine]
            per_voice = get_engine(engine).speakers_per_voice or SPEAKERS_PER_VOICE
            assert len(mine) == per_voice[split] * len({s.timbre for s in mine})
        assert all(len(sentence_plan(s)) == SENTENCES_PER_SPEAKER[split] for s in group)
    # the few neural voices (when installed) all train, each as many speakers
    neural = [s for s in speakers if s.engine == "neural"]
    assert all(s.split == "train" for s in neural)
    assert len({(s.timbre, s.voice.speed) for s in neural}) == len(neural)
    texts = {
        split: [t for s in group for _, t in sentence_plan(s)] for split, group in by_split.items()
    }
    names = [n for s in speakers for n, _ in sentence_plan(s)]
    assert len(set(names)) == len(names)  # one clip per sentence
    assert all(len(set(t)) == len(t) for t in texts.values())
    assert not set(texts["train"]) & (set(texts["val"]) | set(texts["test"]))
    assert not set(texts["val"]) & set(texts["test"])
    # eSpeak voices span every English accent and speaking rates of 120-220 wpm
    voices = [s.voice for s in speakers if s.engine == "espeak"]
    assert len({v.name.split("+")[0] for v in voices}) == 8
    assert min(v.rate for v in voices) < 130 and max(v.rate for v in voices) > 210


def test_mouth_moves_without_jumps(speakers) -> None:
    speaker = speakers[3]
    sentence, text = sentence_plan(speaker)[2]
    clip = synthesize_clip(speaker, sentence, text, SEED)
    mouth = [i for i, n in enumerate(FACE_UNIT_NAMES) if n.startswith(("jaw", "mouth", "tongue"))]
    step = np.abs(np.diff(clip.face_units[:, mouth], axis=0))  # [T-1, K]
    # Per 1/60 s. A full switch between targets would step 0.5-1; fast speakers (up to 220 wpm)
    # unround a /u:/ into a 30 ms /p/ within 50 ms, up to ~0.3 a frame on mouthPucker.
    assert step.max() < 0.35 and np.percentile(step.max(axis=1), 95) < 0.1
    assert clip.face_units[:, FACE_UNIT_NAMES.index("eyeBlinkLeft")].max() > 0.5 or (
        clip.num_frames < 90
    )


def test_needs_a_head_with_face_units(tmp_path: Path) -> None:
    flame_like = SimpleNamespace(face_unit_names=None, source="generic_model.pkl")
    with pytest.raises(TalkingAvatarError, match="face units"):
        generate_talking_set(tmp_path, small=True, head=flame_like, log=None)


def test_unwritable_output_folder_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    from viewer.cli import main as cli_main

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for command in (["data", "talking", "--small"], ["data", "expressions", "--small"]):
        assert cli_main([*command, "--out", str(blocker / "sub")]) == 2
        err = capsys.readouterr().err
        assert (
            err.startswith("talking-avatar: error: cannot create folder") and err.count("\n") == 1
        )


def test_an_interrupted_set_leaves_no_partial_files(tmp_path, head, monkeypatch) -> None:
    import animator.data.talking as talking

    calls = {"n": 0}
    real = talking.face_unit_vertices

    def fail_on_the_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(talking, "face_unit_vertices", fail_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        generate_talking_set(tmp_path, small=True, head=head, progress=False, log=None)
    left = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert not [n for n in left if "tmp" in n or n.endswith((".npy", ".pkl"))], left
