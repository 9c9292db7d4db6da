"""Phone-level forced alignment of a known transcript, with PocketSphinx's en-us model.

PocketSphinx (BSD-2-Clause, from PyPI) ships a continuous HMM acoustic model of US English, the
CMU pronouncing dictionary and a phone language model. Alignment runs in two passes over the same
16 kHz audio: a word-level pass through a grammar that accepts exactly the transcript (with
optional silences between words), then a sub-word pass that places each word's phones inside it.
Times are multiples of the model's 10 ms frame.

Words the dictionary lacks are spoken by eSpeak NG (`espeak.synthesize`, voice en-us), and its
phonemes, mapped to ARPAbet (`visemes.arpabet_of_espeak`), become that word's pronunciation. A
word eSpeak gives no mappable phonemes for is an error naming the word: no word is dropped.

Beams: PocketSphinx's default beams (1e-48), and even 1e-80, pruned the only path through the
grammar on some eSpeak sentences ("Final result does not match the grammar"). The grammar is a
single chain of words, so the search stays small without pruning: the beams below switch it off,
at 0.04 s of CPU per second of audio (benchmarks/align.py).

Forced alignment places any transcript on any audio that is long enough for its phones (at least
30 ms each); it does not check that the audio says the text. Only audio too short for the text
fails.

The decoder loads on the first call (about 0.3 s, 40 MB) and is reused; calls are serialized.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np

from animator.audio import SAMPLE_RATE, load_audio
from animator.data.espeak import Phoneme, Voice, synthesize
from animator.data.visemes import VOWEL_VISEMES, arpabet_of_espeak, viseme_of_arpabet
from avatar.errors import TalkingAvatarError

__all__ = [
    "PhoneSpan",
    "align_phones",
    "pronunciation",
    "transcript_words",
    "bilabial_dips",
    "spans_of_phonemes",
    "boundary_errors",
    "MODEL_RATE",
]

#: The acoustic model's sample rate (Hz); input is resampled to it.
MODEL_RATE = SAMPLE_RATE
_FRAME_S = 0.01  # the model's frame shift
_SILENCE = "SIL"
# The decoder's own names for silence and sentence boundaries in the word alignment.
_NON_WORDS = frozenset({"<s>", "</s>", "<sil>", "(NULL)"})
_DECODER_OPTIONS = {
    "lm": None,  # no language model: the grammar of the transcript is the only search
    "bestpath": False,  # the lattice pass can leave the grammar in pocketsphinx 5
    "beam": 1e-200,
    "wbeam": 1e-200,
    "pbeam": 1e-200,
    "loglevel": "FATAL",
}


@dataclass(frozen=True)
class PhoneSpan:
    """One aligned phone.

    Attributes:
        symbol: ARPAbet without stress digits ("B", "AA"), or "SIL" for silence.
        start, end: seconds from the start of the audio.
        word: the transcript word the phone belongs to (normalized: lower case), None for SIL.
        word_index: that word's position among the transcript's words (0-based), None for SIL;
            it tells a repeated word ("that that") apart.
    """

    symbol: str
    start: float
    end: float
    word: str | None = None
    word_index: int | None = None


class _Aligner:
    """The loaded decoder; one per process."""

    def __init__(self) -> None:
        try:
            import pocketsphinx
        except ImportError as err:  # pragma: no cover - it is a dependency
            raise TalkingAvatarError(
                "pocketsphinx is not installed; install it with `pip install pocketsphinx==5.1.1`"
            ) from err
        self.decoder = pocketsphinx.Decoder(**_DECODER_OPTIONS)
        self.lock = threading.Lock()

    def ensure_words(self, words: list[str]) -> None:
        """Add eSpeak pronunciations for the words the dictionary lacks."""
        for word in dict.fromkeys(words):
            if self.decoder.lookup_word(word) is None:
                self.decoder.add_word(word, " ".join(pronunciation(word)), True)

    def align(self, pcm: bytes, words: list[str]) -> list[tuple[str, int, int, int | None]]:
        """(phone, first frame, frame count, word index or None) for each aligned phone."""
        decoder = self.decoder
        with self.lock:
            self.ensure_words(words)
            try:
                decoder.set_align_text(" ".join(words))
                self._decode(pcm)
                decoder.set_alignment()
                self._decode(pcm)
            except RuntimeError:
                return []
            alignment = decoder.get_alignment()
            phones = []
            index = -1
            for word in alignment or ():
                # The alignment lists the transcript's words in order, fillers between them.
                index += word.name not in _NON_WORDS
                position = None if word.name in _NON_WORDS else index
                for phone in word:
                    phones.append((phone.name, int(phone.start), int(phone.duration), position))
        return phones

    def _decode(self, pcm: bytes) -> None:
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()


_ALIGNER: _Aligner | None = None
_ALIGNER_LOCK = threading.Lock()


def _aligner() -> _Aligner:
    global _ALIGNER
    with _ALIGNER_LOCK:
        if _ALIGNER is None:
            _ALIGNER = _Aligner()
        return _ALIGNER


def transcript_words(text: str) -> list[str]:
    """Lower-case words: letters, digits and inner apostrophes; everything else separates."""
    return [w.strip("'") for w in re.findall(r"[a-z0-9']+", text.lower()) if w.strip("'")]


def pronunciation(word: str) -> list[str]:
    """ARPAbet phones for a word as eSpeak NG (en-us) says it.

    Raises:
        TalkingAvatarError: eSpeak gives no phoneme that maps to ARPAbet.
    """
    phones: list[str] = []
    for phoneme in synthesize(word, Voice("en-us")).phonemes:
        if phoneme.is_pause:
            continue
        arpabet = arpabet_of_espeak(phoneme.symbol)
        if arpabet is None:
            raise TalkingAvatarError(
                f"cannot pronounce {word!r}: eSpeak phoneme {phoneme.symbol!r} has no ARPAbet "
                "equivalent; spell the word out in the transcript"
            )
        phones.extend(arpabet)
    if not phones:
        raise TalkingAvatarError(
            f"cannot pronounce {word!r}: eSpeak gives it no phonemes; spell it out in the transcript"
        )
    return phones


def align_phones(samples: np.ndarray, sample_rate: int, text: str) -> list[PhoneSpan]:
    """Align the phones of `text` to the speech in `samples`.

    Args:
        samples: mono `[N]` (or `[C, N]`) speech, int16 or float in [-1, 1].
        sample_rate: of `samples`, in Hz; resampled to 16 kHz inside.
        text: what is said, in English words (punctuation and case are ignored; numbers are
            spoken as eSpeak reads them).

    Returns:
        Contiguous spans from 0 to the audio's duration (seconds, 10 ms steps, the last one ends
        at the duration): the transcript's phones in order, with "SIL" where there is silence.

    Raises:
        TalkingAvatarError: empty text or audio, a word that cannot be pronounced, or audio that
            cannot be aligned to the text (it says something else, or is not speech).
    """
    words = transcript_words(text)
    if not words:
        raise TalkingAvatarError(f"nothing to align in {text!r}; pass the words the audio says")
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / 32768.0  # int16 full scale
    audio = load_audio(samples, sample_rate)
    duration = samples.shape[-1] / sample_rate  # the input's, not the resampled length
    if duration < 0.1:
        raise TalkingAvatarError(
            f"{duration * 1000:.0f} ms of audio is too short to align; pass at least 0.1 s"
        )
    pcm = (audio.samples * 32767.0).astype("<i2").tobytes()
    raw = _aligner().align(pcm, words)
    if not raw or all(index is None for *_, index in raw):
        raise TalkingAvatarError(
            f"could not align {text!r} to {duration:.1f} s of audio; check that the audio says "
            "exactly this text"
        )
    spans: list[PhoneSpan] = []
    for phone, first, count, index in raw:
        start = min(first * _FRAME_S, duration)
        end = min((first + count) * _FRAME_S, duration)
        symbol = phone.rstrip("012")
        if end <= start:
            continue
        if symbol == _SILENCE or index is None:
            symbol, index = _SILENCE, None
        if spans and spans[-1].symbol == _SILENCE and symbol == _SILENCE:
            spans[-1] = PhoneSpan(_SILENCE, spans[-1].start, end)
            continue
        if spans and start > spans[-1].end:
            spans.append(PhoneSpan(_SILENCE, spans[-1].end, start))
        word = None if index is None else words[index]
        spans.append(PhoneSpan(symbol, start, end, word, index))
    if spans[0].start > 0.0:
        spans.insert(0, PhoneSpan(_SILENCE, 0.0, spans[0].start))
    last = spans[-1]
    if last.symbol == _SILENCE or duration - last.end < _FRAME_S:
        spans[-1] = PhoneSpan(last.symbol, last.start, duration, last.word, last.word_index)
    else:
        spans.append(PhoneSpan(_SILENCE, last.end, duration))
    return spans


def bilabial_dips(samples: np.ndarray, sample_rate: int, spans: list[PhoneSpan]) -> np.ndarray:
    """How much quieter each aligned bilabial is than the vowels beside it, in dB.

    The lips close during P, B and M, so a bilabial placed on the audio where it is spoken is a
    dip in loudness (silence for P, a murmur for B and M) between louder vowels; one placed on a
    vowel is not. Positive values are dips.

    Args:
        samples: mono `[N]` speech, int16 or float.
        sample_rate: Hz.
        spans: `align_phones` output for it.

    Returns:
        `[K]` dB, one per bilabial that has a vowel on at least one side (mean of the sides).
    """
    x = np.asarray(samples, dtype=np.float64)  # [N]

    def level(span: PhoneSpan) -> float:
        part = x[int(span.start * sample_rate) : max(int(span.end * sample_rate), 1)]
        return 10.0 * np.log10(np.mean(part**2) + 1e-12) if part.size else -120.0

    dips = []
    for i, span in enumerate(spans):
        if viseme_of_arpabet(span.symbol) != "bilabial":
            continue
        sides = [
            level(spans[j])
            for j in (i - 1, i + 1)
            if 0 <= j < len(spans) and viseme_of_arpabet(spans[j].symbol) in VOWEL_VISEMES
        ]
        if sides:
            dips.append(float(np.mean(sides)) - level(span))
    return np.array(dips)


def spans_of_phonemes(phonemes: list[Phoneme]) -> list[PhoneSpan]:
    """eSpeak phoneme spans as ARPAbet spans (a two-phone mnemonic is split at its middle).

    Used to score the aligner against eSpeak's own timings; pauses become "SIL".
    """
    spans = []
    for p in phonemes:
        phones = arpabet_of_espeak(p.symbol) or ()
        step = (p.end - p.start) / max(len(phones), 1)
        for k, phone in enumerate(phones):
            spans.append(PhoneSpan(phone, p.start + k * step, p.start + (k + 1) * step))
    return spans


def boundary_errors(reference: list[PhoneSpan], aligned: list[PhoneSpan]) -> dict[str, np.ndarray]:
    """Signed boundary differences (aligned - reference, seconds) of the phones two alignments share.

    The two phone sequences (silences left out) are matched by edit distance, where a phone
    matches the same phone, or at half cost another of its class (a pronunciation variant such
    as AH for IH). For each matched pair of the same class, both its start and its end
    differences are kept.

    Returns:
        {"bilabial": [K1], "vowel": [K2], "other": [K3]} differences in seconds.
    """

    def kind(symbol: str) -> str:
        viseme = viseme_of_arpabet(symbol)
        return (
            "bilabial" if viseme == "bilabial" else "vowel" if viseme in VOWEL_VISEMES else "other"
        )

    a = [s for s in reference if s.symbol != _SILENCE]
    b = [s for s in aligned if s.symbol != _SILENCE]

    def cost(x: PhoneSpan, y: PhoneSpan) -> float:
        return 0.0 if x.symbol == y.symbol else 0.5 if kind(x.symbol) == kind(y.symbol) else 1.0

    table = np.zeros((len(a) + 1, len(b) + 1))  # [A + 1, B + 1] edit distances
    table[:, 0] = np.arange(len(a) + 1)
    table[0, :] = np.arange(len(b) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i, j] = min(
                table[i - 1, j - 1] + cost(a[i - 1], b[j - 1]),
                table[i - 1, j] + 1.0,
                table[i, j - 1] + 1.0,
            )
    pairs = []  # matched (reference, aligned), last first
    i, j = len(a), len(b)
    while i > 0 and j > 0:
        c = cost(a[i - 1], b[j - 1])
        if table[i, j] == table[i - 1, j - 1] + c:
            if c < 1.0:
                pairs.append((a[i - 1], b[j - 1]))
            i, j = i - 1, j - 1
        elif table[i, j] == table[i - 1, j] + 1.0:
            i -= 1
        else:
            j -= 1
    errors: dict[str, list[float]] = {"bilabial": [], "vowel": [], "other": []}
    for x, y in reversed(pairs):
        errors[kind(x.symbol)] += [y.start - x.start, y.end - x.end]
    return {k: np.array(v) for k, v in errors.items()}
