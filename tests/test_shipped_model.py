"""The shipped eviction model (models/eviction.onnx) is the one its MANIFEST describes, the
``learned`` policy serves it (no fallback) with the candidate rule it was trained with, and its
ONNX output is the numpy forward pass of its shipped parameters."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.cache.paged import PagedCache
from edge.config import load_config
from edge.learned.network import (
    CANDIDATE_FEATURES,
    FEATURE_SCHEMA_VERSION,
    INPUT_NAMES,
    DuelingQNet,
    model_inputs,
)
from edge.learned.onnx_model import SHIPPED_MODEL_PATH, load_model_file
from edge.learned.serving import OnnxScorer
from edge.learned.train_command import train_eviction

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
POLICY_FILE = ROOT / "policies" / "cold-rl.yaml"


@pytest.fixture(scope="module")
def manifest():
    return yaml.safe_load((MODELS / "MANIFEST").read_text())


def test_the_policy_loads_the_model_from_models():
    assert SHIPPED_MODEL_PATH == MODELS / "eviction.onnx"


def test_model_matches_its_manifest(manifest):
    data = SHIPPED_MODEL_PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    assert manifest["model"] == "models/eviction.onnx"
    # The schema the MANIFEST names is this edge's, and the file's metadata says the same.
    assert manifest["feature_schema_version"] == FEATURE_SCHEMA_VERSION
    assert tuple(manifest["input_names"]) == INPUT_NAMES
    model = load_model_file(SHIPPED_MODEL_PATH, expected_sha256=manifest["sha256"])
    assert model.metadata["feature_schema_version"] == manifest["feature_schema_version"]
    assert model.metadata["input_names"] == manifest["input_names"]
    assert model.metadata["seed"] == manifest["training"]["seed"]
    # The command it records is the one the file was made by (export_onnx keeps it).
    assert model.metadata["command"] == manifest["training"]["command"]
    assert " train-eviction " in manifest["training"]["command"]
    assert manifest["training"]["wall_seconds"] > 0


def test_policy_file_serves_it_with_the_trained_candidate_rule(manifest):
    config = load_config(POLICY_FILE)
    assert config.cache.policy == "learned"
    params = config.cache.policy_params
    assert params.get("model") is None  # null: the shipped file
    assert params["sha256"] == manifest["sha256"]
    trained = manifest["training"]["config"]
    assert (params["k_tail"], params["k_rand"], params["k_head"]) == \
        (trained["k_tail"], trained["k_rand"], trained["k_head"])
    assert manifest["serving"] == {"policy_file": "policies/cold-rl.yaml", "k_tail": 8,
                                   "k_head": 16, "k_rand": 104}


def test_the_policy_serves_the_shipped_model_without_fallback(manifest):
    params = dict(load_config(POLICY_FILE).cache.policy_params)
    params["budget_us"] = 1e6  # a loaded CI machine must time the model, not fall back
    sizes = np.random.default_rng(5).integers(1000, 50_000, 400).tolist()
    cache = PagedCache(sum(sizes[:100]), "learned", policy_params=params, load_workers=0,
                       loader=lambda key: (key, sizes[key]))
    try:
        for key in list(range(400)) + list(range(50)):
            with cache.acquire(key):
                pass
        stats = cache.policy.stats()
        assert cache.stats().evictions > 0
        assert stats["model_error"] is None and stats["model_sha256"] == manifest["sha256"]
        assert stats["decisions"] > 0 and stats["model_decisions"] == stats["decisions"]
        assert stats["fallback_decisions"]["no_model"] == 0
        assert sum(stats["fallback_decisions"].values()) == 0
    finally:
        cache.close()


def test_onnx_output_equals_numpy_forward_of_the_shipped_parameters():
    parameters = SHIPPED_MODEL_PATH.with_suffix(".npz")
    with np.load(parameters, allow_pickle=False) as saved:
        net = DuelingQNet.from_parameters(dict(saved))
    # Inputs as the C core's features give them: log1p of quantities over many magnitudes.
    rng = np.random.default_rng(11)
    features = rng.lognormal(mean=3.0, sigma=4.0, size=(257, len(CANDIDATE_FEATURES)))
    x = model_inputs(features, 0.0, rng.random((257,)), rng.random((257,)) / 10)
    onnx_q = OnnxScorer(SHIPPED_MODEL_PATH).q_values(x)
    np.testing.assert_allclose(onnx_q, net.forward(x), rtol=1e-5, atol=1e-5)
    # Not a degenerate model: it ranks candidates differently.
    assert np.ptp(net.eviction_preference(x)) > 1e-3


def test_train_eviction_help_names_the_shipped_models_options(manifest):
    """``edge train-eviction --help`` tells a user how the shipped model was trained: the
    options it names are the MANIFEST command's, value for value."""
    argv = shlex.split(manifest["training"]["command"])
    named = ("--objective", "--k-tail", "--k-head", "--k-rand", "--one-hit-weights")
    wanted = " ".join(f"{flag} {argv[argv.index(flag) + 1]}" for flag in named)
    assert wanted in " ".join(train_eviction.help.split())
