"""The closure rule: speech closures survive any emotion; everything else stays the paper's sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from animator import Animator
from animator.closure import ClosureKeeper
from animator.data.lips import inner_lip_gap
from animator.emotion import EMOTIONS, as_track


@pytest.fixture(scope="module")
def anim(head) -> Animator:
    return Animator.load(head=head)


#: "Shut" is the neutral face's own aperture (the bundled head rests with its lips 0.6 mm apart)
#: plus this much: what is left after one linear step through FLAME's curved jaw motion.
SHUT_MM = 0.5


def shut_mm(head) -> float:
    return float(gap_mm(head, head.neutral_params(1))[0]) + SHUT_MM


def gap_mm(head, params) -> np.ndarray:
    return 1000.0 * inner_lip_gap(
        head(params).numpy(), head.region("lip_upper_inner"), head.region("lip_lower_inner"),
        anchors=head.region("teeth_upper"), reference=head.v_template.numpy(),
    )  # fmt: skip


def test_direction_closes_each_column_one_millimetre_per_unit(head) -> None:
    keeper = ClosureKeeper.for_head(head)
    k = keeper.gradient.shape[0]
    assert k >= 5  # the central columns of the inner-lip contours
    torch.testing.assert_close(keeper.gradient @ keeper.direction, torch.eye(k), atol=1e-4, rtol=0)
    # the gradient is right: a small jaw opening opens the lips by what it predicts
    p = head.neutral_params(1)
    p.jaw_pose[0, 0] = 0.05
    predicted = float(keeper.gradient[:, head.num_expr].max() * 0.05)
    assert gap_mm(head, p)[0] == pytest.approx(predicted, rel=0.15)


def test_open_speech_or_pressing_expression_is_the_plain_sum(head) -> None:
    keeper = ClosureKeeper.for_head(head)
    g, u = keeper.gradient, keeper.direction  # [K, P], [P, K]
    ones = torch.ones(g.shape[0])
    open_speech = (u @ (6.0 * ones))[None]  # every column 6 mm apart: c = 0
    closed_speech = torch.zeros(1, g.shape[1])  # gap 0: c = 1
    opening = (u @ (8.0 * ones))[None]  # the expression opens every column by 8 mm
    pressing = -opening
    assert float(keeper.speech_closure(open_speech)) == 0.0
    assert float(keeper.speech_closure(closed_speech)) == 1.0
    torch.testing.assert_close(keeper.combine(open_speech, opening), open_speech + opening)
    torch.testing.assert_close(keeper.combine(closed_speech, pressing), closed_speech + pressing)
    sealed = keeper.combine(closed_speech, opening)
    assert (sealed[0] @ g.T).abs().max() < 1e-3  # fully taken back


def test_every_emotion_keeps_the_speech_closures(anim: Animator, head) -> None:
    """Lips shut by speech (jaw closed, as on p/b/m) stay shut with each emotion at 1, while the
    emotion still shows everywhere else (the plain sum opens them by millimetres)."""
    closed = torch.zeros(1, anim.num_speech)  # w_A = 0 is the closed, neutral mouth
    for label in EMOTIONS:
        w_e = anim.emotion_weights(as_track({label: 1.0}), 1)
        anim.keep_closures = False
        plain = anim.to_flame(closed, w_e)
        anim.keep_closures = True
        kept = anim.to_flame(closed, w_e)
        assert gap_mm(head, kept)[0] < shut_mm(head), label
        upper = head.region("upper_face")
        diff = (head(kept) - head(plain))[0, upper].norm(dim=-1).max()
        assert float(diff) < 1e-3, label  # the upper face is the emotion's, untouched
        if gap_mm(head, plain)[0] > 3.0:
            assert gap_mm(head, kept)[0] < 0.3 * gap_mm(head, plain)[0], label


def test_sealing_speech_weights_shuts_the_lips_only_where_asked(anim: Animator, head) -> None:
    keeper = anim.closure_keeper
    g_w, u_w = keeper.weight_sealer(anim.mapping[: anim.num_speech])
    torch.testing.assert_close(g_w.T @ u_w, torch.eye(g_w.shape[1]), atol=1e-3, rtol=0)
    from avatar.paths import asset_path

    anim.seal_bilabials = False  # this shipped animator may or may not have a classifier
    speech = anim.speech_weights(asset_path("speech", "sample.wav"))
    anim.seal_bilabials = True
    no_emotion = torch.zeros(len(speech), anim.emotion_codes.shape[1])
    gaps = gap_mm(head, anim.to_flame(speech, no_emotion))
    open_frames = np.argsort(gaps)[-60::10][:6].copy()  # six open frames of the speech
    assert len(open_frames) == 6 and (gaps[open_frames] > 3.0).all()
    w_a = speech[open_frames]
    strength = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.5, 0.0])
    sealed = keeper.seal_weights(w_a, strength, (g_w, u_w))
    torch.testing.assert_close(sealed[strength == 0], w_a[strength == 0])
    before = (w_a @ g_w).clamp_min(0)
    after = sealed @ g_w
    assert after[2:4].clamp_min(0).max() < 1e-3  # fully shut (linearised)
    torch.testing.assert_close(after[4].clamp_min(0), 0.5 * before[4], atol=1e-3, rtol=0)
    # through FLAME: a speech frame whose lips part is shut for real
    no_emotion = torch.zeros(6, anim.emotion_codes.shape[1])
    true_gap = gap_mm(head, anim.to_flame(sealed, no_emotion))
    assert np.all(true_gap[2:4] < shut_mm(head)) and true_gap[0] == pytest.approx(
        gap_mm(head, anim.to_flame(w_a, no_emotion))[0]
    )


def test_bilabial_strength_from_the_phone_classifier() -> None:
    from animator.animator import bilabial_strength
    from animator.data.visemes import VISEMES

    logits = torch.full((3, len(VISEMES)), -5.0)
    b = list(VISEMES).index("bilabial")
    logits[0, b] = 5.0  # surely a p/b/m
    logits[1, list(VISEMES).index("alveolar")] = 5.0  # surely t/d/n
    # frame 2: uniform, the classifier does not know
    strength = bilabial_strength(logits)
    assert strength[0] == pytest.approx(1.0) and strength[1] == 0.0 and strength[2] == 0.0


def test_in_silence_the_emotion_owns_the_mouth(head) -> None:
    """speaking scales the rule: 0 (nothing heard) is the plain sum, 1 the full seal."""
    keeper = ClosureKeeper.for_head(head)
    ones = torch.ones(keeper.gradient.shape[0])
    closed = torch.zeros(3, keeper.gradient.shape[1])
    opening = (keeper.direction @ (8.0 * ones))[None].expand(3, -1)
    speaking = torch.tensor([0.0, 0.5, 1.0])
    out = keeper.combine(closed, opening, speaking)
    torch.testing.assert_close(out[0], opening[0])  # silence: the expression as it is
    gaps = out @ keeper.gradient.T
    torch.testing.assert_close(gaps[1], 4.0 * ones, atol=1e-3, rtol=0)
    assert gaps[2].abs().max() < 1e-3
    torch.testing.assert_close(
        keeper.combine(closed, opening), out[2:].expand(3, -1), atol=1e-3, rtol=0
    )


def test_speech_activity_from_the_phone_classifier() -> None:
    from animator.animator import SPEAKING_REACH as R
    from animator.animator import speech_activity
    from animator.data.visemes import VISEMES

    rest, vowel = list(VISEMES).index("rest"), list(VISEMES).index("open")
    logits = torch.full((4 * R, len(VISEMES)), -5.0)
    logits[:, rest] = 5.0
    logits[2 * R, rest], logits[2 * R, vowel] = -5.0, 5.0  # one heard frame in silence
    logits[2 * R + 2, rest], logits[2 * R + 2, vowel] = 2.0, 2.0  # p(rest) 0.5: half heard
    s = speech_activity(logits)
    assert s[2 * R] == pytest.approx(1.0, abs=1e-3)
    assert s[R + 2 : 3 * R - 1].min() > 0.99  # a closure, a fading "m", a short pause
    assert s[: R - 3].max() < 1e-3 and s[3 * R + 5 :].max() < 1e-3  # silence far from it


def test_silent_surprise_opens_the_mouth_and_speech_keeps_its_closures(anim: Animator, head):
    from animator.audio import Audio

    silence = Audio(np.zeros(16_000, np.float32))
    quiet = anim.animate(silence, {"surprised": 1.0}, idle=False)
    assert gap_mm(head, quiet.params).min() > 5.0  # the jaw drop parts the lips
    fields = anim.emotion_fields((1.0,))
    lips = head.region("lip_lower_inner")
    assert float(fields["surprised"][1.0][lips, 1].mean()) < -0.005  # lower lip 5 mm down
