"""Choose the fusion module's K_A, K_E and sparsity weight by experiment (the evidence behind the
defaults): one speech model (from a checkpoint), several fusion trainings, measured on held-out
data. Prints a Markdown table.

Run: `python scripts/sweep_fusion.py --talking data/talking --expressions data/expressions
--checkpoint assets/animator [--steps 1200]`.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from animator.checkpoint import load_checkpoint  # noqa: E402
from animator.train import (  # noqa: E402
    TrainConfig,
    emotion_codes,
    load_training_data,
    speech_predictions,
    train_fusion,
    train_speech_model,
)


@torch.no_grad()
def measure(fusion, basis, talk_in, talk, expr_in, expr, lips, upper, fps):
    """Held-out figures: reconstruction, how much each path carries, leaks, emotion strength."""

    def energy(c, region=None):
        d = basis.decode(c)
        e = d.pow(2).sum(-1)
        return float(e[..., region].sum() if region is not None else e.sum())

    rec_t = rec_e = tot_t = tot_e = 0.0
    a_on_t = e_on_t = a_on_e = e_on_e = 0.0
    speech_upper = speech_all = 0.0
    for x, c in zip(talk_in, talk, strict=True):
        w_a, w_e = fusion.encode(x[None])
        pa, pe = w_a[0] @ fusion.speech_coeffs, w_e[0] @ fusion.expression_coeffs
        rec_t += float((pa + pe - c.coeffs).pow(2).sum())
        tot_t += float(c.coeffs.pow(2).sum())
        a_on_t += energy(pa)
        e_on_t += energy(pe)
        speech_upper += energy(pa, upper)
        speech_all += energy(pa)
    for c in expr:
        w_a, w_e = fusion.encode(c.coeffs[None])
        pa, pe = w_a[0] @ fusion.speech_coeffs, w_e[0] @ fusion.expression_coeffs
        rec_e += float((pa + pe - c.coeffs).pow(2).sum())
        tot_e += float(c.coeffs.pow(2).sum())
        a_on_e += energy(pa)
        e_on_e += energy(pe)
    codes = emotion_codes(fusion, expr, fps)
    emo = basis.decode(codes @ fusion.expression_coeffs)  # [7, V, 3]
    return {
        "talk rel. error %": 100 * rec_t / tot_t,
        "expr rel. error %": 100 * rec_e / tot_e,
        "speech via w_E %": 100 * e_on_t / (a_on_t + e_on_t),
        "expressions via w_A %": 100 * a_on_e / (a_on_e + e_on_e),
        "speech path in upper face %": 100 * speech_upper / speech_all,
        "emotion apex max mm": float(emo.norm(dim=-1).max(dim=1).values.mean()) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--talking", required=True)
    ap.add_argument("--expressions", required=True)
    ap.add_argument("--checkpoint", required=True, help="its speech model is reused")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.0, 1e-4, 1e-3, 1e-2])
    ap.add_argument("--ka", type=int, nargs="+", default=[32])
    ap.add_argument("--ke", type=int, nargs="+", default=[16])
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = replace(TrainConfig(), stage2_steps=args.steps)
    # stage 1 comes from the checkpoint, so no augmented renditions are needed
    basis, talk, expr, meta = load_training_data(
        args.talking, args.expressions, cfg, renditions=False
    )
    _, tensors = load_checkpoint(args.checkpoint)
    speech_state = {k[len("speech.") :]: v for k, v in tensors.items() if k.startswith("speech.")}
    basis.load_state_dict(
        {k[len("basis.") :]: v for k, v in tensors.items() if k.startswith("basis.")}
    )
    from avatar.flame import load_flame

    head = load_flame()
    lips, upper = head.region("lips"), head.region("upper_face")
    speech = train_speech_model(
        talk, cfg, meta["num_vertices"], len(meta["train_subjects"]), state=speech_state
    )
    train_talk = [c for c in talk if c.split == "train"]
    held_talk = [c for c in talk if c.split == "val"]
    train_in = speech_predictions(speech, train_talk)
    held_in = speech_predictions(speech, held_talk, neutral=True)
    rows = []
    for lam, ka, ke in itertools.product(args.sparsity, args.ka, args.ke):
        run = replace(cfg, sparsity=lam, speech_blendshapes=ka, expression_blendshapes=ke)
        fusion = train_fusion(
            train_in,
            train_talk,
            expr,
            run,
            meta["num_vertices"],
            progress=False,
            log=lambda *_: None,
        )
        row = {
            "sparsity": lam,
            "K_A": ka,
            "K_E": ke,
            **measure(fusion, basis, held_in, held_talk, expr, expr, lips, upper, cfg.fps),
        }
        rows.append(row)
        print(row, flush=True)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print(
            "| "
            + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys)
            + " |"
        )


if __name__ == "__main__":
    main()
