"""Training-time speech augmentation: each step measured against what it promises."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from scipy import signal

from animator import augment as A
from animator.audio import SAMPLE_RATE as SR
from animator.audio import load_audio
from avatar.errors import TalkingAvatarError


def _has_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg

        return shutil.which(imageio_ffmpeg.get_ffmpeg_exe()) is not None
    except (ImportError, RuntimeError):
        return False


needs_ffmpeg = pytest.mark.skipif(not _has_ffmpeg(), reason="imageio-ffmpeg's ffmpeg is missing")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """A real sentence (eSpeak), 16 kHz: about 3 s."""
    from animator.data.espeak import Voice, synthesize

    u = synthesize("Maybe the baker will bring a bigger basket of plums.", Voice("en-us+m3"))
    audio = load_audio(u.audio, u.sample_rate).samples
    assert 0.05 < np.abs(audio).max() < 1.0  # int16 PCM was scaled, not clipped
    return audio


def vowel(f0: float = 120.0, formants=((700, 80), (1200, 90), (2600, 120)), seconds=2.0):
    """A sustained synthetic vowel: glottal pulses (slight vibrato) through three resonators."""
    n = int(SR * seconds)
    pulses = np.zeros(n)
    t = 0.0
    while t < seconds:
        pulses[int(t * SR)] = 1.0
        t += 1.0 / (f0 * (1 + 0.02 * np.sin(2 * np.pi * 3 * t)))
    out = pulses
    for freq, bandwidth in formants:
        r = np.exp(-np.pi * bandwidth / SR)
        out = signal.lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * freq / SR), r * r], out)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def lpc_formants(audio: np.ndarray, order: int = 14) -> np.ndarray:
    """Resonance frequencies (Hz, bandwidth < 400 Hz) of an LPC fit to the middle half."""
    import librosa

    mid = audio[len(audio) // 4 : 3 * len(audio) // 4].astype(np.float64)
    mid = signal.lfilter([1, -0.63], [1], mid) * np.hanning(len(mid))
    roots = np.roots(librosa.lpc(mid, order=order))
    roots = roots[np.imag(roots) > 0]
    freqs = np.angle(roots) * SR / (2 * np.pi)
    bandwidths = -np.log(np.abs(roots)) * SR / np.pi
    return np.sort(freqs[(bandwidths < 400) & (freqs > 200)])


def median_f0(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import librosa

    f0, voiced, _ = librosa.pyin(audio, fmin=60, fmax=500, sr=SR, frame_length=1024)
    return f0, voiced


def lag_between(reference: np.ndarray, other: np.ndarray, max_lag: int = 2000) -> int:
    """Lag (samples) of the cross-correlation peak: other[n + lag] matches reference[n]."""
    corr = signal.correlate(other, reference, mode="full", method="fft")
    lags = signal.correlation_lags(len(other), len(reference), mode="full")
    keep = np.abs(lags) <= max_lag
    return int(lags[keep][np.argmax(corr[keep])])


def bursts(offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two tone bursts in digital silence and where they are (the true active part)."""
    x = np.zeros(3 * SR, dtype=np.float32)
    active = np.zeros(x.shape[0], dtype=bool)
    for start, stop, freq, amp in ((0.4, 1.2, 220.0, 0.3), (1.7, 2.5, 570.0, 0.1)):
        a, b = int(start * SR) + offset, int(stop * SR) + offset
        x[a:b] = amp * np.sin(2 * np.pi * freq * np.arange(b - a) / SR)
        active[a:b] = True
    return x, active


# ------------------------------------------------------------------------------ noise
@pytest.mark.parametrize("offset", [0, 77])
@pytest.mark.parametrize("snr", [5.0, 17.5, 30.0])
def test_noise_reaches_the_requested_snr_on_the_active_part(offset: int, snr: float) -> None:
    x, active = bursts(offset)
    rng = np.random.default_rng(1)
    others = [vowel(110.0), vowel(190.0, seconds=1.3)]
    noises = [A.coloured_noise(x.shape[0], c, rng) for c in A.NOISE_COLOURS]
    noises.append(A.babble(others, x.shape[0], 4, rng))
    for noise in noises:
        noisy = A.add_at_snr(x, noise, snr)
        added = noisy - x
        measured = 10 * np.log10(np.mean(x[active] ** 2) / np.mean(added[active] ** 2))
        assert abs(measured - snr) < 0.5, (snr, offset, measured)


def test_active_mask_is_the_speech_and_not_the_silence() -> None:
    x, active = bursts(0)
    mask = A.active_mask(x)
    assert np.array_equal(mask, active)  # bursts start and end on 20 ms frame edges


@pytest.mark.parametrize("colour, slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_noise_colours_have_their_spectral_slope(colour: str, slope: float) -> None:
    noise = A.coloured_noise(8 * SR, colour, np.random.default_rng(0))
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-3)
    f, power = signal.welch(noise, fs=SR, nperseg=4096)
    band = (f > 50) & (f < 5000)
    fitted = np.polyfit(np.log10(f[band]), np.log10(power[band]), 1)[0]
    assert abs(fitted - slope) < 0.1


def test_babble_needs_sources() -> None:
    with pytest.raises(TalkingAvatarError, match="babble needs other utterances"):
        A.babble([], 100, 3, np.random.default_rng(0))


# ------------------------------------------------------------------------------ room
def schroeder_rt60(ir: np.ndarray) -> float:
    """RT60 from the backward-integrated energy decay, fitted 5-25 dB below the level after the
    direct sound (T20, extrapolated to 60 dB)."""
    edc = np.cumsum(ir[::-1].astype(np.float64) ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    t = np.arange(ir.shape[0]) / SR
    after_direct = edc_db[1]
    fit = (edc_db <= after_direct - 5) & (edc_db >= after_direct - 25)
    slope = np.polyfit(t[fit], edc_db[fit], 1)[0]  # dB per second
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.15, 0.4, 0.9])
@pytest.mark.parametrize("drr", [-3.0, 4.0, 12.0])
def test_impulse_response_has_the_requested_rt60_and_drr(rt60: float, drr: float) -> None:
    for seed in range(3):
        ir = A.room_impulse_response(rt60, drr, np.random.default_rng(seed))
        assert abs(schroeder_rt60(ir) - rt60) < 0.15 * rt60
        tail = np.sum(ir[1:].astype(np.float64) ** 2)
        assert 10 * np.log10(ir[0] ** 2 / tail) == pytest.approx(drr, abs=0.01)


def test_reverberation_keeps_the_time_axis(speech: np.ndarray) -> None:
    ir = A.room_impulse_response(0.6, 0.0, np.random.default_rng(0))
    wet = A.reverberate(speech, ir)
    assert wet.shape == speech.shape
    assert np.sqrt(np.mean(wet**2)) == pytest.approx(np.sqrt(np.mean(speech**2)), rel=1e-3)
    assert lag_between(speech, wet) == 0
    with pytest.raises(TalkingAvatarError, match="RT60 9.0 s is out of range"):
        A.room_impulse_response(9.0, 0.0, np.random.default_rng(0))


# ------------------------------------------------------------------------------ channel
def test_telephone_band_is_300_to_3400_hz(speech: np.ndarray) -> None:
    noise = A.coloured_noise(3 * SR, "white", np.random.default_rng(0)) * 0.2
    for x in (speech, noise):
        phone = A.telephone(x)
        assert phone.shape == x.shape
        f, power = signal.welch(phone, fs=SR, nperseg=1024)
        total = power.sum()
        assert 10 * np.log10(power[f > 4000].sum() / total) < -30
        assert 10 * np.log10(power[f < 150].sum() / total) < -30
    assert lag_between(speech, A.telephone(speech)) == 0


@needs_ffmpeg
@pytest.mark.parametrize("codec, kbps", [("mp3", 16), ("mp3", 32), ("vorbis", 16), ("opus", 8)])
def test_codec_round_trip_keeps_length_and_alignment(
    speech: np.ndarray, codec: str, kbps: int
) -> None:
    out = A.codec_round_trip(speech, codec, kbps)
    assert out.shape == speech.shape and out.dtype == np.float32
    assert abs(lag_between(speech, out)) <= SR // 1000  # within 1 ms
    # lossy but still the same speech
    err = np.sum((out - speech) ** 2) / np.sum(speech**2)
    assert 1e-4 < err < 0.6


def test_align_to_removes_a_known_delay(speech: np.ndarray) -> None:
    for delay in (1105, -300, 0):
        moved = np.roll(np.pad(speech, 2000), delay)[2000:-2000]
        if delay > 0:
            moved = np.concatenate([np.zeros(delay, np.float32), speech])
        back = A.align_to(speech, moved)
        assert back.shape == speech.shape and lag_between(speech, back) == 0


@needs_ffmpeg
def test_unknown_codec_is_named() -> None:
    with pytest.raises(TalkingAvatarError, match="unknown codec 'aac'; use mp3, vorbis, opus"):
        A.codec_round_trip(np.zeros(100, np.float32), "aac", 32)


# ------------------------------------------------------------------------------ speaker
@pytest.mark.parametrize("factor", [0.85, 0.93, 1.15])
def test_speed_changes_the_length_and_f0_by_the_factor(factor: float) -> None:
    x = vowel()
    fast, used = A.change_speed(x, factor)
    assert used == pytest.approx(factor, abs=0.005)
    assert fast.shape[0] == round(x.shape[0] / used)
    f0_in, v_in = median_f0(x)
    f0_out, v_out = median_f0(fast)
    ratio = np.median(f0_out[v_out]) / np.median(f0_in[v_in])
    assert ratio == pytest.approx(used, rel=0.01)


@pytest.mark.parametrize("semitones", [-4.0, -1.5, 2.5, 4.0])
def test_pitch_shift_moves_f0_and_keeps_length_timing_and_formants(
    speech: np.ndarray, semitones: float
) -> None:
    shifted = A.shift_pitch(speech, semitones)
    assert shifted.shape == speech.shape
    f0_in, v_in = median_f0(speech)
    f0_out, v_out = median_f0(shifted)
    both = v_in & v_out
    ratio = float(np.median(f0_out[both] / f0_in[both]))
    assert ratio == pytest.approx(2 ** (semitones / 12), rel=0.03)
    # the time axis holds: the loudness envelopes line up within 10 ms
    env_in = np.abs(signal.hilbert(speech))[::16]
    env_out = np.abs(signal.hilbert(shifted))[::16]
    assert abs(lag_between(env_in, env_out, max_lag=100)) <= 10
    # formants stay where they were (a sustained vowel, LPC)
    x = vowel()
    np.testing.assert_allclose(
        lpc_formants(A.shift_pitch(x, semitones)), lpc_formants(x), rtol=0.06
    )


@pytest.mark.parametrize("alpha", [0.87, 1.12])
def test_vocal_tract_warp_moves_the_formants_and_keeps_f0(alpha: float) -> None:
    x = vowel()
    warped = A.warp_vocal_tract(x, alpha)
    assert warped.shape == x.shape
    before, after = lpc_formants(x), lpc_formants(warped)
    assert before.shape == after.shape == (3,)
    np.testing.assert_allclose(after / before, alpha, rtol=0.05)
    f0_in, v_in = median_f0(x)
    f0_out, v_out = median_f0(warped)
    assert np.median(f0_out[v_out]) == pytest.approx(np.median(f0_in[v_in]), rel=0.01)


def test_time_stretch_keeps_pitch_and_scales_length() -> None:
    x = vowel()
    for stretch in (0.8, 1.25):
        y = A.time_stretch(x, stretch)
        assert y.shape[0] == round(x.shape[0] * stretch)
        f0_in, v_in = median_f0(x)
        f0_out, v_out = median_f0(y)
        assert np.median(f0_out[v_out]) == pytest.approx(np.median(f0_in[v_in]), rel=0.01)


def test_out_of_range_parameters_are_named() -> None:
    x = vowel(seconds=0.2)
    with pytest.raises(TalkingAvatarError, match="speed factor 5 is out of range"):
        A.change_speed(x, 5)
    with pytest.raises(TalkingAvatarError, match="vocal-tract warp 3 is out of range"):
        A.warp_vocal_tract(x, 3)
    with pytest.raises(TalkingAvatarError, match="unknown noise colour 'blue'"):
        A.coloured_noise(10, "blue", np.random.default_rng(0))
    with pytest.raises(TalkingAvatarError, match=r"mono audio \[N\], got shape \(2, 5\)"):
        A.apply_gain(np.zeros((2, 5)), 3.0)


# ------------------------------------------------------------------------------ level
def test_gain_and_clipping() -> None:
    x = vowel(seconds=0.5)
    assert np.max(np.abs(A.apply_gain(x, -20.0))) == pytest.approx(0.05, rel=1e-5)
    clipped = A.clip(x, 0.2)
    assert np.max(np.abs(clipped)) == pytest.approx(0.2)
    assert np.array_equal(clipped[np.abs(x) < 0.2], x[np.abs(x) < 0.2])


# ------------------------------------------------------------------------------ chain
def test_chain_is_seeded_and_reports_its_speed(speech: np.ndarray) -> None:
    cfg = replace(A.AugmentConfig(), p_codec=0.0)
    sources = [vowel(150.0)]
    a = A.augment(speech, np.random.default_rng(5), config=cfg, babble_sources=sources)
    b = A.augment(speech, np.random.default_rng(5), config=cfg, babble_sources=sources)
    assert np.array_equal(a.audio, b.audio) and a.steps == b.steps
    for seed in range(12):
        out = A.augment(speech, np.random.default_rng(seed), config=cfg, babble_sources=sources)
        assert out.audio.dtype == np.float32 and np.abs(out.audio).max() <= 1.0
        assert out.audio.shape[0] == round(speech.shape[0] / out.speed)
        assert out.speed == 1.0 or any(s.startswith("speed") for s in out.steps)


def test_chain_with_everything_on_and_everything_off(speech: np.ndarray) -> None:
    off = A.AugmentConfig(
        p_speed=0, p_pitch=0, p_vocal_tract=0, p_reverb=0, p_noise=0,
        p_telephone=0, p_codec=0, p_gain=0, p_clip=0,
    )  # fmt: skip
    same = A.augment(speech, np.random.default_rng(0), config=off)
    assert np.array_equal(same.audio, speech) and same.steps == () and same.speed == 1.0
    on = replace(off, p_speed=1, p_pitch=1, p_vocal_tract=1, p_reverb=1, p_noise=1, p_gain=1)
    on = replace(on, p_telephone=1.0, p_clip=1)
    out = A.augment(speech, np.random.default_rng(0), config=on)
    kinds = [s.split()[0] for s in out.steps]
    assert kinds == ["speed", "pitch", "vocal", "reverb", "noise", "telephone", "gain", "clip"]
