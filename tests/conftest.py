"""Shared fixtures: the bundled head is loaded once per test session; the viewer tests' models
and headless viewer once per module."""

from __future__ import annotations

import pytest

from avatar.flame import FlameModel, load_flame


@pytest.fixture(scope="session")
def head() -> FlameModel:
    return load_flame()


@pytest.fixture(scope="module")
def models():
    """The bundled animator and the default avatar, for the viewer tests."""
    from animator import Animator
    from avatar.avatars import load_avatar

    head = load_flame()
    anim = Animator.load(head=head)
    return anim, load_avatar(None, head)


@pytest.fixture(scope="module")
def app(models):
    """A headless viewer on a free port: small frames, the CPU rasterizer, `PROXY` allowed."""
    from viewer_client import start_test_viewer

    viewer = start_test_viewer(*models)
    yield viewer
    viewer.stop()
