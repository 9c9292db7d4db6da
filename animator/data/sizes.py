"""Sizes of generated data sets, written for people (the generators' plans and summaries)."""

from __future__ import annotations

__all__ = ["format_bytes"]


def format_bytes(num: float) -> str:
    """A size for people: "512 B", "57.4 KB", "4.0 GB"."""
    if num < 1024:
        return f"{int(num)} B"
    for unit in ("KB", "MB", "GB"):
        num /= 1024
        if num < 1024 or unit == "GB":
            break
    return f"{num:.1f} {unit}"
