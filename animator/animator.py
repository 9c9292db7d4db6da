"""The animator's public face: speech audio + emotions -> FLAME parameters, frame by frame.

    from animator import Animator
    anim = Animator.load()                       # the bundled, trained animator
    perf = anim.animate("speech.wav", emotion={"happy": 0.7}, fps=30)
    vertices = anim.head(perf.params)            # [T, V, 3]

Per clip, the audio goes through the speech model once; after that every frame is a matrix
product: w = [w_A, w_E] -> (expr, jaw) -> FLAME. Moving an emotion slider changes w_E only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from animator.audio import DEFAULT_FPS, SAMPLE_RATE, Audio, load_audio
from animator.checkpoint import load_checkpoint
from animator.closure import ClosureKeeper, smoothstep
from animator.emotion import EMOTIONS, EmotionTrack, as_track
from animator.features import log_mel
from animator.idle import IdleLayer, idle_layer
from animator.models import (
    FusionConfig,
    FusionModule,
    MotionBasis,
    SpeechModel,
    SpeechModelConfig,
)
from animator.retarget import Retarget
from avatar.errors import TalkingAvatarError
from avatar.flame import FlameModel, FlameParams, load_flame
from avatar.flame.model import BUNDLED_HEAD
from avatar.flame.params import read_npz
from avatar.paths import ASSETS_DIR

BUNDLED_ANIMATOR = ASSETS_DIR / "animator"


@dataclass
class Performance:
    """An animated clip: the audio, its frame rate, and what drives the head each frame.

    Attributes:
        audio: the speech (16 kHz mono).
        fps: frames per second; frame i shows time i / fps.
        params: FLAME parameters for every frame (GaussianAvatars' names).
        speech_weights: w_A `[T, K_A]`. expression_weights: w_E `[T, K_E]`.
        track: the emotion track used. silent: True when the audio had no speech.
        head: the FLAME head the parameters drive (the animator's, retargeted or not), so a
            performance is never separated from its head; None only for hand-built ones.
    """

    audio: Audio
    fps: float
    params: FlameParams
    speech_weights: torch.Tensor
    expression_weights: torch.Tensor
    track: EmotionTrack
    silent: bool = False
    head: FlameModel | None = field(default=None, repr=False, compare=False)

    @property
    def num_frames(self) -> int:
        return self.params.num_frames

    def save(self, path: str | Path, *, vertices: bool = False, chunk: int = 256) -> Path:
        """Write the performance as an .npz: FlameParams under GaussianAvatars' flame_param
        names, plus fps, the audio's duration and sample rate, the emotion track (JSON), the
        blend weights and, with `vertices`, its head's vertices `[T, V, 3]`
        (float32, metres), computed and written `chunk` frames at a time so memory stays flat
        for any length (the file holds 57 KB a frame on the bundled head)."""
        import json

        from avatar.flame.params import StreamedArray

        extra = {
            "fps": np.array(self.fps, dtype=np.float64),
            "audio_duration": np.array(self.audio.duration, dtype=np.float64),
            "audio_sample_rate": np.array(self.audio.source_rate, dtype=np.int64),
            "emotion_track": np.array(json.dumps(self.track.to_list())),
            "speech_weights": self.speech_weights.numpy().astype(np.float32),
            "expression_weights": self.expression_weights.numpy().astype(np.float32),
        }
        streamed = {}
        if vertices:
            if self.head is None:
                raise TalkingAvatarError("this performance has no head to compute vertices with")
            head, n = self.head, self.num_frames

            def chunks():
                with torch.no_grad():
                    for start in range(0, n, chunk):
                        stop = min(n, start + chunk)
                        yield head(self.params.slice(start, stop)).cpu().numpy()

            shape = (n, head.num_vertices, 3)
            streamed["vertices"] = StreamedArray(shape, np.dtype(np.float32), chunks())
        return self.params.save_npz(path, streamed=streamed, **extra)


def load_performance(
    path: str | Path, audio: str | Path | Audio, *, flame: str | Path | None = None
) -> Performance:
    """A performance saved by `Performance.save`, with its speech, for the head it drives
    (`flame`, default the bundled head; `Performance.head`)."""
    import json

    arrays = read_npz(path, what="performance", hint="write one with `talking-avatar animate`")
    missing = [k for k in ("fps", "audio_duration", "emotion_track") if k not in arrays]
    if missing:
        raise TalkingAvatarError(
            f"{path} lacks {', '.join(missing)}: not written by `talking-avatar animate`"
        )
    params = FlameParams.from_arrays(arrays, source=str(path))
    head = load_flame(flame)
    if params.expr.shape[1] > head.num_expr:
        head._fit_width(params.expr, head.num_expr, "expr")  # raises the clear mismatch error
    audio = load_audio(audio)
    fps = float(arrays["fps"])
    if abs(audio.duration - float(arrays["audio_duration"])) > 1.0 / fps:
        raise TalkingAvatarError(
            f"{path} was made for {float(arrays['audio_duration']):.2f} s of audio but the audio is "
            f"{audio.duration:.2f} s; pass the same --audio as to `animate`"
        )
    n = params.num_frames
    perf = Performance(
        audio=audio,
        fps=fps,
        params=params,
        speech_weights=torch.from_numpy(arrays.get("speech_weights", np.zeros((n, 0), np.float32))),
        expression_weights=torch.from_numpy(
            arrays.get("expression_weights", np.zeros((n, 0), np.float32))
        ),
        track=EmotionTrack.from_list(json.loads(str(arrays["emotion_track"]))),
        silent=audio.is_silent,
        head=head,
    )
    return perf


#: The phone classifier's bilabial probability at which the lips start to seal and are shut.
SEAL_FROM, SEAL_FULL = 0.3, 0.6


def bilabial_strength(logits: torch.Tensor) -> torch.Tensor:
    """How firmly to shut the lips `[T]` in [0, 1], from the speech model's viseme logits
    `[T, P]` (`animator.training_data.PHONE_CLASSES`): a smoothstep of the bilabial probability."""
    from animator.data.visemes import VISEMES

    p = logits.softmax(dim=-1)[:, list(VISEMES).index("bilabial")]  # [T]
    return smoothstep(p, SEAL_FROM, SEAL_FULL)


#: Frames (at the model's 30 fps) either side of heard speech that still count as speaking:
#: half a second, so the lips keep speech's closures through a stop's silent closure, a fading
#: final "m" and the pauses between phrases; the emotion owns the mouth only before and after
#: speech and in silences over a second (on the real-speech set the closures under emotion are
#: then exactly those of the ungated rule; at 4 frames, surprise's went from 0.228 to 0.249).
SPEAKING_REACH = 15


#: 1 - p(rest) at which a frame starts to count as speech, and fully does.
TALK_FROM, TALK_FULL = 0.1, 0.6


def speech_activity(logits: torch.Tensor) -> torch.Tensor:
    """How much each frame `[T]` in [0, 1] is speech rather than silence, from the viseme
    logits `[T, P]`: a smoothstep of 1 - p(rest), widened by `SPEAKING_REACH` frames each side
    and ramped. Widened, because a stop's closure is silent and the classifier often calls it
    rest; sharp, because a closure sealed at 0.9 leaves a tenth of a surprised jaw's opening."""
    from animator.data.visemes import VISEMES

    heard = 1.0 - logits.softmax(dim=-1)[:, list(VISEMES).index("rest")]  # [T]
    talk = smoothstep(heard, TALK_FROM, TALK_FULL)
    k = 2 * SPEAKING_REACH + 1
    wide = torch.nn.functional.max_pool1d(talk[None, None], k, 1, SPEAKING_REACH)
    return torch.nn.functional.avg_pool1d(wide, 5, 1, 2, count_include_pad=False)[0, 0]


class Animator:
    """Trained speech model, fusion blendshapes, emotion codes and FLAME mapping (see module doc)."""

    def __init__(self, config: dict, tensors: dict[str, torch.Tensor], head: FlameModel) -> None:
        self.config = config
        self.head = head

        def sub(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.speech_model = SpeechModel(SpeechModelConfig(**config["speech_model"])).eval()
        self.speech_model.load_state_dict(sub("speech."))
        self.fusion = FusionModule(FusionConfig(**config["fusion"])).eval()
        self.fusion.load_state_dict(sub("fusion."))
        fc = config["fusion"]
        self.basis = MotionBasis(fc["components"], fc["num_vertices"])
        self.basis.load_state_dict(sub("basis."))
        self.emotion_codes = tensors["emotion_codes"]  # [7, K_E]
        self.mapping = tensors["mapping"]  # [K_A + K_E, E + 3]
        self.mapping_residual_mm = tensors["mapping_residual_mm"]  # [K]
        self.fps = float(config["speech_model"]["fps"])
        #: Keep speech closures under emotions (`animator.closure`); off = the paper's plain sum.
        self.keep_closures = True
        #: Shut the lips where the speech model's phone classifier hears p, b or m (when the
        #: model has one): a regression smooths a 60 ms closure into a half-open mouth.
        self.seal_bilabials = True
        self._closure_keeper: ClosureKeeper | None = None
        self._weight_sealer: tuple[torch.Tensor, torch.Tensor] | None = None
        #: The retarget to a head the animator was not trained on (`animator.retarget`), else None.
        self.retarget: Retarget | None = None
        if head.num_vertices != fc["num_vertices"] or self.mapping.shape[1] != head.num_expr + 3:
            self._retarget_to(head, fc["num_vertices"])

    def _retarget_to(self, head: FlameModel, trained_vertices: int) -> None:
        """Drive `head` through a retarget of the mapping from the bundled head (cached)."""
        import sys

        from animator.retarget import cached_retarget

        bundled = load_flame(BUNDLED_HEAD)
        if (
            bundled.num_vertices != trained_vertices
            or self.mapping.shape[1] != bundled.num_expr + 3
        ):
            raise TalkingAvatarError(
                f"this animator was trained for a head with {trained_vertices} vertices and "
                f"{self.mapping.shape[1] - 3} expression components, but {head.source} has "
                f"{head.num_vertices} and {head.num_expr}, and only an animator trained on the "
                "bundled head can be retargeted; use the matching head (--flame)"
            )
        rt, _ = cached_retarget(bundled, head, log=lambda line: print(line, file=sys.stderr))
        rt.apply(bundled, head)
        self.mapping = self.mapping @ rt.params.to(self.mapping)
        self.retarget = rt

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        head: FlameModel | None = None,
        flame: str | Path | None = None,
    ) -> Animator:
        """Load a checkpoint folder (default: the bundled animator) for a head model."""
        config, tensors = load_checkpoint(BUNDLED_ANIMATOR if path is None else path)
        try:
            return cls(config, tensors, head if head is not None else load_flame(flame))
        except (KeyError, RuntimeError, TypeError) as err:
            raise TalkingAvatarError(
                f"animator checkpoint {path or BUNDLED_ANIMATOR} does not match this program "
                f"({type(err).__name__}: {err}); retrain it with `talking-avatar train`"
            ) from None

    @property
    def num_speech(self) -> int:
        return self.fusion.cfg.speech_blendshapes

    def speech_weights(
        self, audio: str | Path | Audio | np.ndarray, *, fps: float = DEFAULT_FPS
    ) -> torch.Tensor:
        """w_A `[T, K_A]` for T = round(duration * fps) frames; zeros for silent audio."""
        return self.speech_track(audio, fps=fps)[0]

    @torch.no_grad()
    def speech_track(
        self, audio: str | Path | Audio | np.ndarray, *, fps: float = DEFAULT_FPS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_A `[T, K_A]`, speaking `[T]` in [0, 1]) for T = round(duration * fps) frames.

        speaking (`speech_activity`) tells the closure rule where a closed mouth is a closure
        of speech (keep it shut under an emotion) and where it is silence (the emotion owns the
        mouth); all ones for a model without a phone classifier, zeros for silent audio."""
        audio = load_audio(audio, None if not isinstance(audio, np.ndarray) else SAMPLE_RATE)
        num = audio.num_frames(fps)
        if audio.is_silent:
            return torch.zeros(num, self.num_speech), torch.zeros(num)
        mel = torch.from_numpy(log_mel(audio))[None]  # [1, T_a, 80]
        native = audio.num_frames(self.fps)
        if self.speech_model.to_phones is not None:
            coeffs, logits = self.speech_model.predict_long(mel, native, with_phones=True)
        else:
            coeffs, logits = self.speech_model.predict_long(mel, native), None  # [T30, C]
        w_a = self.fusion.speech_encoder(coeffs[None])[0]  # [T30, K_A]
        if logits is not None and self.seal_bilabials:
            w_a = self.closure_keeper.seal_weights(w_a, bilabial_strength(logits), self._sealer())
        speaking = torch.ones(native) if logits is None else speech_activity(logits)
        if abs(fps - self.fps) < 1e-9:
            return w_a, speaking
        from animator.features import resample_frames

        return (
            resample_frames(w_a, self.fps, num, fps),
            resample_frames(speaking[:, None], self.fps, num, fps)[:, 0],
        )

    def emotion_weights(
        self,
        emotion: Mapping[str, float] | EmotionTrack | Sequence | str | Path | None,
        num_frames: int,
        *,
        fps: float = DEFAULT_FPS,
        start: int = 0,
    ) -> torch.Tensor:
        """w_E `[T, K_E]` of frames start..start + T - 1: per frame, the sum of intensity x apex
        code over the emotions."""
        track = as_track(emotion)
        intensities = torch.from_numpy(track.frames(num_frames, fps, start=start))  # float64
        return (intensities @ self.emotion_codes.double()).float()  # [T, K_E], as to_flame

    def _sealer(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._weight_sealer is None:
            mapping = self.mapping[: self.num_speech]
            self._weight_sealer = self.closure_keeper.weight_sealer(mapping)
        return self._weight_sealer

    @property
    def closure_keeper(self) -> ClosureKeeper:
        """The rule that keeps speech closures under emotions, for this head (built once)."""
        if self._closure_keeper is None:
            self._closure_keeper = ClosureKeeper.for_head(self.head)
        return self._closure_keeper

    def to_flame(
        self, w_a: torch.Tensor, w_e: torch.Tensor, speaking: torch.Tensor | None = None
    ) -> FlameParams:
        """FLAME parameters for blend weights: expr and jaw_pose from the mapping (speech and
        expression added, the lips kept shut where the speech shuts them while `speaking`
        `[T]` (default: everywhere), unless `keep_closures` is off: `animator.closure`), the
        rest zero.

        Computed in float64 and rounded once to float32, so a frame's parameters do not depend
        on how many frames are computed together (float32 products of 1 and of 300 rows round
        their last bit differently): the viewer's one frame is the exported frame, bit for bit.
        """
        k_a = w_a.shape[1]
        speech = w_a.double() @ self.mapping[:k_a].double()  # [T, E + 3]
        expression = w_e.double() @ self.mapping[k_a:].double()  # [T, E + 3]
        if self.keep_closures:
            both = self.closure_keeper.combine(speech, expression, speaking)
        else:
            both = speech + expression
        params = self.head.neutral_params(w_a.shape[0])
        e = self.head.num_expr
        params.expr, params.jaw_pose = both[:, :e].float(), both[:, e:].float()
        return params

    def frame_params(
        self,
        w_a: torch.Tensor,
        w_e: torch.Tensor,
        speaking: torch.Tensor | None,
        idle: IdleLayer | None,
    ) -> FlameParams:
        """FLAME parameters of frames `[T]` from their blend weights, speaking track and idle
        layer (those frames' slice of each): the one path from weights to parameters, taken by
        `perform` for a whole clip and by the viewer for the frame it shows, so an exported
        frame is the frame the viewer showed."""
        params = self.to_flame(w_a, w_e, speaking)
        return params if idle is None else idle.apply(params)

    @torch.no_grad()
    def emotion_fields(
        self, intensities: Sequence[float] = (0.5, 1.0)
    ) -> dict[str, dict[float, torch.Tensor]]:
        """What each emotion does to the silent face (nothing said: the emotion owns the
        mouth), through the shipped path (FLAME): emotion -> intensity -> displacement `[V, 3]`
        (metres) from the head's template; what `expression_metrics.expression_table` measures."""
        silent = torch.zeros(1, self.num_speech)
        quiet = torch.zeros(1)
        fields: dict[str, dict[float, torch.Tensor]] = {}
        for label in EMOTIONS:
            for x in intensities:
                w_e = self.emotion_weights(as_track({label: float(x)}), 1)
                disp = self.head(self.to_flame(silent, w_e, quiet))[0] - self.head.v_template
                fields.setdefault(label, {})[float(x)] = disp
        return fields

    def animate(
        self,
        audio: str | Path | Audio | np.ndarray,
        emotion: Mapping[str, float] | EmotionTrack | Sequence | str | Path | None = None,
        *,
        fps: float = DEFAULT_FPS,
        idle: bool = True,
        seed: int = 0,
    ) -> Performance:
        """The whole clip: speech weights once, emotion weights per frame, FLAME parameters,
        and the idle layer (blinks, eye and head motion; seeded) unless idle=False."""
        if not (1.0 <= fps <= 240.0):
            raise TalkingAvatarError(f"fps {fps} is out of range; use 1 to 240 frames per second")
        audio = load_audio(audio, None if not isinstance(audio, np.ndarray) else SAMPLE_RATE)
        track = as_track(emotion)
        w_a, speaking = self.speech_track(audio, fps=fps)
        return self.perform(
            audio, w_a, track, fps=fps, blinks=idle, head_motion=idle, seed=seed,
            speaking=speaking,
        )  # fmt: skip

    def perform(
        self,
        audio: Audio,
        w_a: torch.Tensor,
        track: EmotionTrack,
        *,
        fps: float,
        blinks: bool = True,
        head_motion: bool = True,
        seed: int = 0,
        speaking: torch.Tensor | None = None,
    ) -> Performance:
        """A performance from speech weights already computed for `audio` (`[T, K_A]` at fps,
        with `speaking` `[T]` from `speech_track`): emotion weights per frame, FLAME parameters
        and the idle layer. Cheap: callers that keep w_A (the viewer) re-perform a clip without
        running the speech model again."""
        w_e = self.emotion_weights(track, w_a.shape[0], fps=fps)
        idle = None
        if blinks or head_motion:
            idle = idle_layer(
                self.head, w_a.shape[0], fps, seed=seed, blinks=blinks, head_motion=head_motion
            )
        params = self.frame_params(w_a, w_e, speaking, idle)
        return Performance(
            audio=audio,
            fps=fps,
            params=params,
            speech_weights=w_a,
            expression_weights=w_e,
            track=track,
            silent=audio.is_silent,
            head=self.head,
        )
