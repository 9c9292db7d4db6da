"""The two learned stages: a FaceFormer-style speech model and the blendshape fusion module.

Stage 1, `SpeechModel`: audio features -> per-frame vertex displacements from the template.
A temporal convolutional audio encoder at 100 Hz, resampled to the motion rate, a transformer
with local, distance-biased self-attention (ALiBi-style, so it has no absolute positions and no
maximum length), a speaking-style embedding per training subject plus their average as the
neutral style, and a linear vertex decoder initialised from a PCA of the training motion.
It is not autoregressive: every frame is predicted in one pass (measured 30-100x faster than
feeding predictions back frame by frame, with no exposure bias to train around).

Stage 2, `FusionModule` (Mao et al. 2025): two 1-D CNN encoders, one for speech displacement
sequences and one for expression sequences, give speech weights w_A `[T, K_A]` and expression
weights w_E `[T, K_E]`; a linear decoder with learned blendshape bases B_A `[K_A, V, 3]` and
B_E `[K_E, V, 3]` gives dV = B_A w_A + B_E w_E. Each basis vector has a fixed RMS size, so the
sparsity penalty on off-domain weights cannot be dodged by rescaling.

Both stages work in one shared, orthonormal motion basis (a PCA of all training displacements,
`MotionBasis`), which keeps training on two CPU cores fast; vertices are decoded at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from animator.audio import DEFAULT_FPS
from animator.features import FEATURE_RATE, N_MELS, resample_frames


@dataclass
class SpeechModelConfig:
    num_vertices: int
    num_subjects: int
    dim: int = 128
    layers: int = 3
    heads: int = 4
    window: int = 24  # attention reaches +-window frames (0.8 s at 30 fps)
    components: int = 96  # size of the shared motion basis the model predicts in
    fps: float = DEFAULT_FPS
    dropout: float = 0.0  # the shipped model trains without
    phone_classes: int = 0  # > 0: a per-frame phone (viseme) classifier for an auxiliary loss


class LocalBiasedAttention(nn.Module):
    """Multi-head self-attention restricted to +-window frames, with a linear distance bias.

    Each head h penalises a key at distance d by slope_h * d (ALiBi), so nearer audio counts
    more; beyond the window the weight is zero. Nothing depends on absolute position, so a clip
    of any length (or any chunk of it) is processed the same way.
    """

    def __init__(self, dim: int, heads: int, window: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        # No bias: a key bias cannot change a softmax, so its gradient is pure rounding noise.
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout
        slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])
        self.register_buffer("slopes", slopes * 8.0 / window, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        pos = torch.arange(t, device=x.device)
        dist = (pos[None, :] - pos[:, None]).abs()  # [T, T]
        bias = -self.slopes[:, None, None] * dist  # [H, T, T]
        bias = bias.masked_fill(dist > self.window, float("-inf"))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), dropout_p=self.dropout if self.training else 0.0
        )  # [B, H, T, Dh]
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LocalBiasedAttention(dim, heads, window, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class SpeechModel(nn.Module):
    """Audio features -> vertex displacements (stage 1). See the module docstring."""

    def __init__(self, cfg: SpeechModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.audio_encoder = nn.Sequential(
            nn.Conv1d(N_MELS, d, 5, padding=2),
            nn.GELU(),
            nn.Conv1d(d, d, 5, padding=4, dilation=2),
            nn.GELU(),
            nn.Conv1d(d, d, 5, padding=8, dilation=4),
        )
        self.style = nn.Embedding(cfg.num_subjects, d)
        nn.init.normal_(self.style.weight, std=0.02)
        self.blocks = nn.ModuleList(
            _Block(d, cfg.heads, cfg.window, cfg.dropout) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(d)
        self.to_coeffs = nn.Linear(d, cfg.components)
        # Trained as an auxiliary loss: naming the phone from the same features keeps them
        # phonetic (what the mouth follows) rather than tied to one synthesizer's timbre. At
        # run time the animator reads it to seal p/b/m and to tell speech from silence.
        self.to_phones = nn.Linear(d, cfg.phone_classes) if cfg.phone_classes > 0 else None

    @property
    def receptive_frames(self) -> int:
        """How far (in frames) one output can see: the context each chunk needs on each side."""
        return self.cfg.window * self.cfg.layers + 4

    def style_vector(self, subject: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Subject styles `[B, D]`; None gives the neutral style (the average of all subjects)."""
        if subject is None:
            return self.style.weight.mean(dim=0, keepdim=True).expand(batch, -1)
        return self.style(subject)

    def forward(
        self,
        mel: torch.Tensor,
        num_frames: int,
        subject: torch.Tensor | None = None,
        *,
        with_phones: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Motion coefficients `[B, T, C]` for mel `[B, T_a, 80]` (100 Hz), num_frames at cfg.fps;
        with `with_phones` also the phone-class logits `[B, T, phone_classes]`.

        Displacements from the template are `coeffs @ basis` with the shared `MotionBasis`.
        """
        h = self.features(mel, num_frames, subject)  # [B, T, D]
        if not with_phones:
            return self.to_coeffs(h)
        if self.to_phones is None:
            raise ValueError("this speech model has no phone classifier (phone_classes=0)")
        return self.to_coeffs(h), self.to_phones(h)

    def features(
        self, mel: torch.Tensor, num_frames: int, subject: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The normalised per-frame features `[B, T, D]` both output heads read."""
        h = self.audio_encoder(mel.transpose(1, 2)).transpose(1, 2)  # [B, T_a, D]
        h = resample_frames(h, FEATURE_RATE, num_frames, self.cfg.fps)  # [B, T, D]
        return self._in_context(h, subject)

    def _in_context(self, h: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        """Frame-rate audio features `[B, T, D]` -> the normalised features: style, attention."""
        h = h + self.style_vector(subject, h.shape[0])[:, None, :]
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    @torch.no_grad()
    def predict_long(
        self,
        mel: torch.Tensor,
        num_frames: int,
        *,
        chunk_frames: int = 900,
        with_phones: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`forward` for one clip of any length `[1, T_a, 80]` -> `[T, C]` (with `with_phones`
        also the phone logits `[T, P]`), in chunks, with the neutral style.

        Chunks of chunk_frames overlap by the model's receptive field on each side, and only
        their centres are kept, so the result equals one pass over the whole clip while memory
        stays bounded by the chunk size.
        """
        if with_phones and self.to_phones is None:
            raise ValueError("this speech model has no phone classifier (phone_classes=0)")
        ctx = self.receptive_frames
        if num_frames <= chunk_frames + 2 * ctx:
            h = self.features(mel, num_frames)[0]  # [T, D]
            return (self.to_coeffs(h), self.to_phones(h)) if with_phones else self.to_coeffs(h)
        per_frame = FEATURE_RATE / self.cfg.fps
        out, phones = [], []
        for start in range(0, num_frames, chunk_frames):
            stop = min(num_frames, start + chunk_frames)
            a, b = max(0, start - ctx), min(num_frames, stop + ctx)
            # Audio features for frames [a, b): the encoder's own padding needs a margin too.
            fa = max(0, int(math.floor(a * per_frame)) - 16)
            fb = min(mel.shape[1], int(math.ceil(b * per_frame)) + 16)
            shifted = a * per_frame - fa  # feature offset of frame a within the slice
            h = self.audio_encoder(mel[:, fa:fb].transpose(1, 2)).transpose(1, 2)
            pos = shifted + torch.arange(b - a, dtype=torch.float64) * per_frame
            h = self._in_context(_interp_at(h, pos), None)[0, start - a : stop - a]  # [n, D]
            out.append(self.to_coeffs(h))
            if with_phones:
                phones.append(self.to_phones(h))
        return (torch.cat(out), torch.cat(phones)) if with_phones else torch.cat(out)


def _interp_at(frames: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of frames `[B, T, C]` at fractional positions `[N]`."""
    pos = pos.clamp(0, frames.shape[1] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=frames.shape[1] - 1)
    frac = (pos - lo).to(frames.dtype)[:, None]
    return frames[:, lo] * (1 - frac) + frames[:, hi] * frac


@dataclass
class FusionConfig:
    components: int  # C, the shared motion basis
    num_vertices: int
    speech_blendshapes: int = 32  # K_A
    expression_blendshapes: int = 32  # K_E
    hidden: int = 128
    basis_rms: float = 0.002  # metres: RMS displacement over vertices of every blendshape at w = 1


class _SequenceEncoder(nn.Module):
    def __init__(self, inputs: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(inputs, hidden, 5, padding=2),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, 5, padding=2),
            nn.GELU(),
            nn.Conv1d(hidden, outputs, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).transpose(1, 2)


class FusionModule(nn.Module):
    """Disentangled speech and expression blendshapes (stage 2). See the module docstring.

    It works in the shared motion basis P `[3V, C]` (orthonormal columns): a displacement
    sequence enters as coefficients `[B, T, C]`, and each blendshape is `c @ P^T` for a learned
    coefficient row c. Because P is orthonormal, errors measured on coefficients equal errors on
    vertices (within the basis), so training never touches the full vertex array.
    """

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.components
        self.speech_encoder = _SequenceEncoder(c, cfg.hidden, cfg.speech_blendshapes)
        self.expression_encoder = _SequenceEncoder(c, cfg.hidden, cfg.expression_blendshapes)
        self.speech_coeffs_raw = nn.Parameter(torch.randn(cfg.speech_blendshapes, c))
        self.expression_coeffs_raw = nn.Parameter(torch.randn(cfg.expression_blendshapes, c))

    def _normalised(self, raw: torch.Tensor) -> torch.Tensor:
        # RMS over the 3V vertex coordinates of c @ P^T is |c| / sqrt(3V) for orthonormal P.
        target = self.cfg.basis_rms * math.sqrt(3 * self.cfg.num_vertices)
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12) * target

    @property
    def speech_coeffs(self) -> torch.Tensor:
        """B_A in the motion basis `[K_A, C]`."""
        return self._normalised(self.speech_coeffs_raw)

    @property
    def expression_coeffs(self) -> torch.Tensor:
        """B_E in the motion basis `[K_E, C]`."""
        return self._normalised(self.expression_coeffs_raw)

    def encode(self, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both encoders on sequences `[B, T, C]` -> (w_A `[B, T, K_A]`, w_E `[B, T, K_E]`)."""
        return self.speech_encoder(coeffs), self.expression_encoder(coeffs)

    def decode(self, w_a: torch.Tensor, w_e: torch.Tensor) -> torch.Tensor:
        """Motion coefficients `[..., T, C]` of B_A w_A + B_E w_E."""
        return w_a @ self.speech_coeffs + w_e @ self.expression_coeffs

    def forward(self, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w_a, w_e = self.encode(coeffs)
        return self.decode(w_a, w_e), w_a, w_e


class MotionBasis(nn.Module):
    """An orthonormal basis P `[C, V, 3]` of displacement sequences (uncentred PCA), shared by
    both stages: coefficients 0 are the template, and `decode(c) = c @ P`."""

    def __init__(self, components: int, num_vertices: int) -> None:
        super().__init__()
        self.register_buffer("basis", torch.zeros(components, num_vertices * 3))

    @property
    def num_vertices(self) -> int:
        return self.basis.shape[1] // 3

    @classmethod
    def fit(cls, frames: torch.Tensor, components: int) -> tuple[MotionBasis, float]:
        """Basis of displacement frames `[N, V, 3]`; also returns the share of energy kept."""
        x = frames.reshape(frames.shape[0], -1).float()  # [N, 3V]
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(0)  # the randomised SVD is deterministic for the same frames
        _, s, v = torch.svd_lowrank(x, q=min(components + 16, min(x.shape)), niter=6)
        torch.random.set_rng_state(gen_state)
        kept = float((s[:components] ** 2).sum() / x.pow(2).sum())
        out = cls(components, frames.shape[1])
        out.basis.copy_(v[:, :components].T)
        return out, kept

    def encode(self, disp: torch.Tensor) -> torch.Tensor:
        """Coefficients `[..., C]` of displacements `[..., V, 3]`."""
        return disp.flatten(-2) @ self.basis.T

    def decode(self, coeffs: torch.Tensor, vertices: torch.Tensor | None = None) -> torch.Tensor:
        """Displacements `[..., V, 3]` (optionally only rows `vertices`) of coefficients."""
        basis = self.basis.view(self.basis.shape[0], -1, 3)
        if vertices is not None:
            basis = basis[:, vertices]
        out = coeffs @ basis.flatten(1)
        return out.view(*coeffs.shape[:-1], -1, 3)
