"""The process's threading policy (avatar/threads.py)."""

from __future__ import annotations

import torch

from avatar import threads


def test_training_threads_fixed_count_is_set_and_kept():
    before = torch.get_num_threads()
    try:
        pacer = threads.TrainingThreads(1, period_s=0.0)
        assert torch.get_num_threads() == 1
        assert pacer.update() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_training_threads_follow_the_cores_others_leave(monkeypatch):
    """Others using a whole core leave one; once they stop, every core comes back."""
    before = torch.get_num_threads()
    samples = iter(
        [
            # (monotonic s, (busy, total) jiffies, own CPU s)
            (0.0, (0, 0), 0.0),
            (10.0, (2000, 2000), 10.0),  # all 2 cores busy, this process used 1 of them
            (20.0, (2400, 4000), 14.0),  # machine 20 % busy, all of it this process
        ]
    )
    monkeypatch.setattr(threads.TrainingThreads, "_sample", lambda self: next(samples))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    try:
        pacer = threads.TrainingThreads(None, period_s=1.0)
        assert pacer.update() == 1 and torch.get_num_threads() == 1
        assert pacer.update() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_cpu_jiffies_reads_the_machine():
    got = threads._cpu_jiffies()
    if got is not None:  # Linux
        busy, total = got
        assert 0 <= busy <= total
