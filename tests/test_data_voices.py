"""Where the talking set's speech comes from: engines, voices, their split, and the sentences."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from animator.data import voices as V
from animator.data.espeak import Utterance, Voice, synthesize
from animator.data.sentences import (
    ALL_SENTENCES,
    TEST_SENTENCES,
    TRAIN_SENTENCES,
    VAL_SENTENCES,
    generate_sentences,
    sentence_pool,
)
from animator.data.visemes import viseme_of
from avatar.errors import TalkingAvatarError


# ------------------------------------------------------------------------------ voices
def test_espeak_offers_every_english_accent_and_the_kept_variants() -> None:
    languages = V.espeak_languages()
    assert len(languages) == 8 and "en-Shaw" not in languages
    timbres = {t.name: t for t in V.espeak_timbres()}
    assert not set(V.ESPEAK_DROPPED_VARIANTS) & set(timbres)
    assert {"m1", "m7", "f1", "f5", "whisper", "klatt", "croak", V.ESPEAK_DEFAULT_TIMBRE} <= set(
        timbres
    )
    assert len(timbres) == 104 - len(V.ESPEAK_DROPPED_VARIANTS) + 1
    assert sum(t.gender == "female" for t in timbres.values()) >= 12


def test_a_speaker_voice_draws_accent_rate_and_pitch_in_range() -> None:
    timbre = next(t for t in V.espeak_timbres() if t.name == "f3")
    drawn = [V.espeak_speaker_voice(timbre, np.random.default_rng(i)) for i in range(40)]
    assert all(v.name.endswith("+f3") for v in drawn)
    assert len({v.name.split("+")[0] for v in drawn}) == 8  # every accent turns up
    rates = [v.rate for v in drawn]
    assert min(rates) >= 120 and max(rates) <= 220 and max(rates) - min(rates) > 60
    default = next(t for t in V.espeak_timbres() if t.name == V.ESPEAK_DEFAULT_TIMBRE)
    assert "+" not in V.espeak_speaker_voice(default, np.random.default_rng(0)).name


def test_loud_variants_are_synthesized_below_the_limiter() -> None:
    plain = synthesize("Please pass me both maps.", Voice("en-US+iven"))
    assert np.mean(np.abs(plain.audio.astype(np.int32)) >= 32000) > 1e-3
    tamed = V.espeak_unclipped("Please pass me both maps.", Voice("en-US+iven"))
    assert tamed.voice.volume < 100
    assert np.mean(np.abs(tamed.audio.astype(np.int32)) >= 32000) <= 1e-3
    assert [p.symbol for p in tamed.phonemes] == [p.symbol for p in plain.phonemes]


def test_split_keeps_whole_voices_apart_and_balances_groups() -> None:
    timbres = V.espeak_timbres()
    splits = V.split_voices(
        timbres, 0, groups=lambda t: t.gender, pinned={V.ESPEAK_DEFAULT_TIMBRE: "test"}
    )
    names = {split: {t.name for t in members} for split, members in splits.items()}
    assert sum(len(n) for n in names.values()) == len(timbres)
    assert not names["train"] & names["val"] and not names["train"] & names["test"]
    assert not names["val"] & names["test"]
    assert splits["test"][0].name == V.ESPEAK_DEFAULT_TIMBRE  # pinned voices come first
    for split in ("val", "test"):
        assert any(t.gender == "female" for t in splits[split])
        assert 8 <= len(names[split]) <= 12
    assert splits == V.split_voices(
        timbres, 0, groups=lambda t: t.gender, pinned={V.ESPEAK_DEFAULT_TIMBRE: "test"}
    )
    other = V.split_voices(timbres, 1, groups=lambda t: t.gender)
    assert {t.name for t in other["val"]} != names["val"]
    assert V.split_voices(["a", "b", "c"], 0) == {"train": ["a", "b", "c"], "val": [], "test": []}


def test_another_engine_plugs_in_with_one_registration(monkeypatch, head) -> None:
    """A toy engine (eSpeak under other names) gets speakers in every split and speaks."""
    from animator.data.talking import make_speakers, synthesize_clip

    calls = []

    def toy_voices() -> list[str]:
        return [f"toy-{i}" for i in range(8)]

    def toy_synthesize(text: str, voice: str) -> Utterance:
        calls.append(voice)
        return synthesize(text, Voice("en-US+m" + str(1 + int(voice[-1]) % 7)))

    monkeypatch.setattr(V, "_ENGINES", dict(V._ENGINES))
    V.register_engine(V.SpeechEngine("toy", toy_voices, toy_synthesize))
    speakers = make_speakers(head, 0)
    toys = [s for s in speakers if s.engine == "toy"]
    assert {s.split for s in toys} == {"train", "val", "test"}
    assert {s.timbre for s in toys} == set(toy_voices())
    clip = synthesize_clip(toys[0], *toys[0].sentences[0], 0)
    assert calls == [toys[0].voice] and clip.num_frames > 60
    with pytest.raises(TalkingAvatarError, match="no speech engine 'nope' is registered"):
        V.get_engine("nope")


# ------------------------------------------------------------------------------ sentences
def test_generated_sentences_are_distinct_seeded_and_new() -> None:
    first = generate_sentences(500, 3)
    assert len(set(first)) == 500 and first == generate_sentences(500, 3)
    assert first != generate_sentences(500, 4)
    assert not set(first) & set(ALL_SENTENCES)
    assert all(s[0].isupper() and s[-1] in ".?" and "  " not in s for s in first)
    words = [len(s.split()) for s in first]
    assert 5 <= min(words) and max(words) <= 18
    excluded = generate_sentences(10, 3, exclude=set(first[:5]))
    assert not set(excluded) & set(first[:5])


def test_sentence_pool_splits_text_without_overlap() -> None:
    pool = sentence_pool(300, 30, 44, 0)
    assert [len(pool[s]) for s in ("train", "val", "test")] == [300, 30, 44]
    assert pool["train"][:40] == TRAIN_SENTENCES
    assert pool["val"][:10] == VAL_SENTENCES and pool["test"][:10] == TEST_SENTENCES
    train, val, test = (set(pool[s]) for s in ("train", "val", "test"))
    assert len(train) == 300 and not train & val and not train & test and not val & test
    assert sentence_pool(20, 5, 5, 0)["train"] == TRAIN_SENTENCES[:20]


def test_generated_text_is_phonetically_balanced() -> None:
    """eSpeak's own phonemes of 200 generated sentences: bilabials beside every vowel class."""
    consonants: collections.Counter[str] = collections.Counter()
    beside_bilabial: collections.Counter[str] = collections.Counter()
    vowels: collections.Counter[str] = collections.Counter()
    for text in generate_sentences(200, 0):
        spans = [p.symbol for p in synthesize(text, Voice("en-us", rate=350)).phonemes]
        spans = [s for s in spans if viseme_of(s) != "rest"]
        for i, symbol in enumerate(spans):
            viseme = viseme_of(symbol)
            if symbol[0] in "aeiouAEIOUV03@":
                vowels[viseme] += 1
                neighbours = spans[max(0, i - 1) : i] + spans[i + 1 : i + 2]
                if any(viseme_of(n) == "bilabial" for n in neighbours):
                    beside_bilabial[viseme] += 1
            else:
                consonants[viseme] += 1
    for viseme in ("open", "mid", "spread", "schwa", "rounded", "close-rounded"):
        assert beside_bilabial[viseme] >= 0.3 * vowels[viseme] and beside_bilabial[viseme] >= 30
    total = sum(consonants.values())
    assert consonants["bilabial"] > 0.2 * total  # the most frequent class, by design
    for viseme in ("labiodental", "dental", "alveolar", "velar", "sibilant", "labiovelar"):
        assert consonants[viseme] > 0.01 * total, viseme
