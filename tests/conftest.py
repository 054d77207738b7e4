"""Fixtures shared across test files."""

from __future__ import annotations

import pytest

from edge.tiny_models import make_tiny_models


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A tiny llama base GGUF and three LoRA adapters for it (ranks 4, 16, 8), written once per
    session by edge.tiny_models (scripts/make_tiny_models.py): ``TinyModels(base, adapters)``."""
    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"), n_adapters=3, seed=0)
