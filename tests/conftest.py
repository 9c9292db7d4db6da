"""Shared fixtures: the bundled head is loaded once per test session."""

from __future__ import annotations

import pytest

from avatar.flame import FlameModel, load_flame


@pytest.fixture(scope="session")
def head() -> FlameModel:
    return load_flame()
