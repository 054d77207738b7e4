"""Fixtures shared across test files."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (scripts/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A tiny llama base GGUF and three LoRA adapters for it (ranks 4, 16, 8), written once per
    session by scripts/make_tiny_models.py: ``TinyModels(base, adapters)``."""
    make = load_script("make_tiny_models").make_tiny_models
    return make(tmp_path_factory.mktemp("tiny-models"), n_adapters=3, seed=0)
