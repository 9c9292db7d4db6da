"""VOCAset and Florence4D-style loaders on small hand-written folders in the real layouts."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from animator.data import load_florence, load_vocaset
from animator.data.meshio import write_obj, write_ply
from animator.data.vocaset import faceformer_split_of
from avatar.errors import TalkingAvatarError
from avatar.flame.pickle_io import load_data_pickle

V = 5
FPS = 60
RATE = 22000
TRAIN_SUBJECT = "FaceTalk_170728_03272_TA"  # FaceFormer training subject
TEST_SUBJECT = "FaceTalk_170809_00138_TA"  # FaceFormer test subject


def _dump(path: Path, value: object) -> None:
    with path.open("wb") as f:
        pickle.dump(value, f, protocol=2)  # like the released files


def _sequences() -> dict[tuple[str, str], np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        (TRAIN_SUBJECT, "sentence01"): rng.normal(size=(6, V, 3)).astype(np.float32),
        (TRAIN_SUBJECT, "sentence02"): rng.normal(size=(4, V, 3)).astype(np.float32),
        (TEST_SUBJECT, "sentence25"): rng.normal(size=(9, V, 3)).astype(np.float32),
    }


def _templates() -> dict[str, np.ndarray]:
    return {s: np.full((V, 3), k, np.float32) for k, s in enumerate((TRAIN_SUBJECT, TEST_SUBJECT))}


def write_released(root: Path, *, shuffle_rows: bool = False) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    seqs = _sequences()
    rows, index, audio, start = [], {}, {}, 0
    for (subject, sentence), verts in seqs.items():
        rows.append(verts)
        frames = {k: start + k for k in range(verts.shape[0])}
        index.setdefault(subject, {})[sentence] = frames
        n = int(verts.shape[0] / FPS * RATE)
        audio.setdefault(subject, {})[sentence] = {
            "audio": (np.arange(n) % 100).astype(np.int16),
            "sample_rate": RATE,
        }
        start += verts.shape[0]
    data = np.concatenate(rows)
    if shuffle_rows:  # scattered rows, as an index may point anywhere
        order = np.random.default_rng(1).permutation(data.shape[0])
        data = data[order]
        inverse = {int(old): new for new, old in enumerate(order)}
        for subject in index:
            for sentence in index[subject]:
                index[subject][sentence] = {
                    k: inverse[r] for k, r in index[subject][sentence].items()
                }
    np.save(root / "data_verts.npy", data)
    _dump(root / "templates.pkl", _templates())
    _dump(root / "subj_seq_to_idx.pkl", index)
    _dump(root / "raw_audio_fixed.pkl", audio)
    return seqs


def write_faceformer(root: Path) -> dict:
    (root / "wav").mkdir(parents=True)
    (root / "vertices_npy").mkdir()
    seqs = _sequences()
    for (subject, sentence), verts in seqs.items():
        np.save(root / "vertices_npy" / f"{subject}_{sentence}.npy", verts.reshape(-1, V * 3))
        n = int(verts.shape[0] / FPS * 16000)
        wavfile.write(root / "wav" / f"{subject}_{sentence}.wav", 16000, np.zeros(n, np.int16))
    _dump(root / "templates.pkl", _templates())
    return seqs


@pytest.mark.parametrize("shuffle_rows", [False, True])
def test_released_layout_reads_every_sequence(tmp_path: Path, shuffle_rows: bool) -> None:
    seqs = write_released(tmp_path, shuffle_rows=shuffle_rows)
    dataset = load_vocaset(tmp_path)
    assert dataset.layout == "released"
    assert len(dataset) == len(seqs)
    for sample in dataset:
        expected = seqs[(sample.subject, sample.sentence)]
        np.testing.assert_array_equal(np.asarray(sample.vertices), expected)
        assert sample.fps == FPS
        assert sample.sample_rate == RATE
        assert sample.audio.dtype == np.float32 and np.abs(sample.audio).max() <= 1.0
        np.testing.assert_array_equal(sample.template, _templates()[sample.subject])
    if not shuffle_rows:
        assert isinstance(dataset[0].vertices, np.memmap)  # contiguous rows stay on disk


def test_faceformer_split_by_real_subject_name(tmp_path: Path) -> None:
    write_released(tmp_path)
    splits = {(s.subject, s.sentence): s.split for s in load_vocaset(tmp_path)}
    assert splits[(TRAIN_SUBJECT, "sentence01")] == "train"
    assert splits[(TEST_SUBJECT, "sentence25")] == "test"
    assert [s.sentence for s in load_vocaset(tmp_path, split="test")] == ["sentence25"]
    assert faceformer_split_of(TEST_SUBJECT, "sentence05") is None  # test uses 21-40
    assert faceformer_split_of("FaceTalk_170811_03275_TA", "sentence30") == "val"
    assert faceformer_split_of("someone_else", "sentence30") is None


def test_faceformer_layout(tmp_path: Path) -> None:
    seqs = write_faceformer(tmp_path)
    dataset = load_vocaset(tmp_path)
    assert dataset.layout == "faceformer"
    assert sorted(dataset.keys) == sorted(seqs)
    sample = dataset.sample(TEST_SUBJECT, "sentence25")
    np.testing.assert_array_equal(np.asarray(sample.vertices), seqs[(TEST_SUBJECT, "sentence25")])
    assert sample.sample_rate == 16000 and sample.split == "test"


def test_missing_file_is_named(tmp_path: Path) -> None:
    write_released(tmp_path)
    (tmp_path / "templates.pkl").unlink()
    with pytest.raises(TalkingAvatarError, match="templates.pkl"):
        load_vocaset(tmp_path)


def test_not_a_dataset_folder(tmp_path: Path) -> None:
    with pytest.raises(TalkingAvatarError, match="data_verts.npy"):
        load_vocaset(tmp_path)


def test_wrong_vertex_count_for_template(tmp_path: Path) -> None:
    write_released(tmp_path)
    _dump(tmp_path / "templates.pkl", {k: np.zeros((V + 1, 3)) for k in _templates()})
    with pytest.raises(TalkingAvatarError, match=r"templates\.pkl.*data_verts\.npy"):
        load_vocaset(tmp_path)


def test_index_past_the_end_of_the_vertex_file(tmp_path: Path) -> None:
    write_released(tmp_path)
    index = load_data_pickle(tmp_path / "subj_seq_to_idx.pkl")
    index[TRAIN_SUBJECT]["sentence01"][5] = 10_000
    _dump(tmp_path / "subj_seq_to_idx.pkl", index)
    with pytest.raises(TalkingAvatarError, match="subj_seq_to_idx.pkl"):
        load_vocaset(tmp_path)


def test_audio_and_motion_frame_count_mismatch(tmp_path: Path) -> None:
    write_released(tmp_path)
    audio = load_data_pickle(tmp_path / "raw_audio_fixed.pkl")
    audio[TRAIN_SUBJECT]["sentence01"]["audio"] = np.zeros(RATE * 3, np.int16)  # 3 s, 6 frames
    _dump(tmp_path / "raw_audio_fixed.pkl", audio)
    dataset = load_vocaset(tmp_path)
    with pytest.raises(TalkingAvatarError, match="raw_audio_fixed.pkl"):
        dataset.sample(TRAIN_SUBJECT, "sentence01")


def test_faceformer_wrong_width_names_the_file(tmp_path: Path) -> None:
    write_faceformer(tmp_path)
    bad = tmp_path / "vertices_npy" / f"{TRAIN_SUBJECT}_sentence01.npy"
    np.save(bad, np.zeros((6, (V - 1) * 3), np.float32))
    with pytest.raises(TalkingAvatarError, match=bad.name):
        load_vocaset(tmp_path).sample(TRAIN_SUBJECT, "sentence01")


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_restricted_unpickler_refuses_code(tmp_path: Path, capsys) -> None:
    path = tmp_path / "templates.pkl"
    with path.open("wb") as f:
        pickle.dump({"s": _Exploit()}, f)
    with pytest.raises(TalkingAvatarError, match="templates.pkl"):
        load_data_pickle(path)
    assert "must never run" not in capsys.readouterr().out


def test_restricted_unpickler_reads_numpy_pickles(tmp_path: Path) -> None:
    value = {"a": {"b": np.arange(6, dtype=np.int16), "rate": 22000}, "c": [np.float32(1.5)]}
    for protocol in (2, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        with path.open("wb") as f:
            pickle.dump(value, f, protocol=protocol)
        back = load_data_pickle(path)
        np.testing.assert_array_equal(back["a"]["b"], value["a"]["b"])
        assert back["a"]["rate"] == 22000 and back["c"][0] == np.float32(1.5)


# --- Florence4D-style ------------------------------------------------------------------------


def write_florence(root: Path, *, suffix: str = ".ply", template: bool = True) -> dict:
    rng = np.random.default_rng(2)
    seqs = {}
    for identity in ("id_a", "id_b"):
        base = rng.normal(size=(V, 3)).astype(np.float32)
        if template:
            (root / identity).mkdir(parents=True)
            write_ply(root / identity / "template.ply", base, np.array([[0, 1, 2]]))
        for expression in ("neutral", "happy"):
            folder = root / identity / expression
            folder.mkdir(parents=True)
            frames = base + 0.01 * rng.normal(size=(4, V, 3)).astype(np.float32)
            for k, frame in enumerate(frames):
                if suffix == ".ply":
                    write_ply(folder / f"{expression}_{k:03d}.ply", frame)
                else:
                    write_obj(folder / f"{k:05d}.obj", frame, np.array([[0, 1, 2]]))
            seqs[(identity, expression)] = (base, frames)
    (root / "dataset.json").write_text(json.dumps({"fps": 30, "splits": {"test": ["id_b"]}}))
    return seqs


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_florence_layout(tmp_path: Path, suffix: str) -> None:
    seqs = write_florence(tmp_path, suffix=suffix, template=suffix == ".ply")
    dataset = load_florence(tmp_path)
    assert dataset.identities == ["id_a", "id_b"]
    assert dataset.expressions == ["happy", "neutral"]
    for sample in dataset:
        base, frames = seqs[(sample.subject, sample.expression)]
        np.testing.assert_allclose(sample.vertices, frames, atol=1e-5)
        expected_template = base if suffix == ".ply" else seqs[(sample.subject, "neutral")][1][0]
        np.testing.assert_allclose(sample.template, expected_template, atol=1e-5)
        assert sample.fps == 30 and sample.sentence is None and sample.audio is None
    assert [s.subject for s in load_florence(tmp_path, split="test")] == ["id_b", "id_b"]


def test_florence_missing_frame_is_named(tmp_path: Path) -> None:
    write_florence(tmp_path)
    (tmp_path / "id_a" / "happy" / "happy_002.ply").unlink()
    with pytest.raises(TalkingAvatarError, match=r"frame 2 is missing"):
        load_florence(tmp_path).sample("id_a", "happy")


def test_florence_wrong_vertex_count_names_the_file(tmp_path: Path) -> None:
    write_florence(tmp_path)
    bad = tmp_path / "id_b" / "neutral" / "neutral_001.ply"
    write_ply(bad, np.zeros((V + 2, 3)))
    with pytest.raises(TalkingAvatarError, match="neutral_001.ply"):
        load_florence(tmp_path).sample("id_b", "neutral")


def test_florence_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(TalkingAvatarError, match="no <identity>"):
        load_florence(tmp_path)
