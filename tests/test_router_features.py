import numpy as np
import pytest
import yaml

from edge.config import from_mapping
from edge.errors import ConfigError
from edge.router.config import FeatureConfig, RouterConfig
from edge.router.features import (
    EXTRACTORS,
    SHAPE_FEATURES,
    HashingExtractor,
    _shape,
    make_extractor,
)


def test_features_are_deterministic_unit_norm_and_fixed_size():
    ex = make_extractor(FeatureConfig(dim=64))
    a = ex.extract("Translate this SQL query into English: SELECT * FROM users;")
    assert a.shape == (64,) and a.dtype == np.float64
    assert np.linalg.norm(a) == pytest.approx(1.0)
    np.testing.assert_array_equal(a, make_extractor(FeatureConfig(dim=64)).extract(
        "Translate this SQL query into English: SELECT * FROM users;"))
    assert np.linalg.norm(ex.extract("")) == pytest.approx(1.0)
    batch = ex.extract_batch(["one", "two"])
    np.testing.assert_array_equal(batch[1], ex.extract("two"))


def test_golden_value_pins_the_hash_across_processes_and_machines():
    # CRC-32 features do not depend on PYTHONHASHSEED; a change here changes saved states.
    x = make_extractor(FeatureConfig(dim=16)).extract("hello world")
    assert FeatureConfig(dim=16).fingerprint() == FeatureConfig(dim=16).fingerprint()
    assert np.round(x, 6).tolist() == GOLDEN


GOLDEN = [-0.346879, -0.173439, -0.346879, 0.0, -0.693758, 0.0, 0.0, 0.173439, 0.0, 0.442185,
          0.132098, 0.070075, 0.0, 0.0, 0.0, 0.0]


def test_similar_prompts_are_closer_than_unrelated_ones():
    ex = HashingExtractor(FeatureConfig(dim=256))
    sql1 = ex.extract("write a SQL query that joins orders and customers")
    sql2 = ex.extract("write an SQL query joining the customers and orders tables")
    poem = ex.extract("compose a sonnet about autumn leaves falling")
    assert sql1 @ sql2 > sql1 @ poem + 0.2


def test_hash_seed_and_dim_change_the_feature_space_and_fingerprint():
    base = FeatureConfig()
    assert FeatureConfig(hash_seed=1).fingerprint() != base.fingerprint()
    assert FeatureConfig(dim=32).fingerprint() != base.fingerprint()
    a = make_extractor(base).extract("same text")
    b = make_extractor(FeatureConfig(hash_seed=1)).extract("same text")
    assert not np.allclose(a, b)


def test_shape_block_reflects_length_and_digits():
    ex = make_extractor(FeatureConfig(dim=32))
    k = len(SHAPE_FEATURES)
    short, digits = ex.extract("hi"), ex.extract("1234 5678 9012 3456")
    assert digits[-k + SHAPE_FEATURES.index("digit_frac")] > 0
    assert short[-k + SHAPE_FEATURES.index("digit_frac")] == 0


def test_bad_feature_settings_name_the_key():
    with pytest.raises(ConfigError, match=r"router.features: dim must be between 1"):
        from_mapping(RouterConfig, {"features": {"dim": 0}}, "router")
    with pytest.raises(ConfigError, match="the hashing extractor needs more than 7 dimensions"):
        make_extractor(FeatureConfig(dim=4))
    with pytest.raises(ConfigError, match=r"router.features.word_ngrams\[0\]"):
        from_mapping(RouterConfig, {"features": {"word_ngrams": ["x"]}}, "router")
    with pytest.raises(ConfigError, match="unknown extractor 'bert'"):
        make_extractor(FeatureConfig(extractor="bert"))
    with pytest.raises(TypeError, match="must be a str"):
        make_extractor(FeatureConfig()).extract(b"bytes")
    assert "hashing" in EXTRACTORS


def test_router_config_loads_from_yaml_and_rejects_bad_values():
    text = """
    features: {dim: 32, char_ngrams: [3]}
    linucb: {alpha: 0.3, discount: 0.999}
    polar: {mode: polar, paging_weight: 2.5, epoch_length: 128}
    feedback: {expiry_seconds: 600}
    state: {path: /tmp/r.state}
    """
    cfg = from_mapping(RouterConfig, yaml.safe_load(text), "router")
    assert cfg.features.char_ngrams == (3,) and cfg.polar.mode == "polar"
    assert cfg.linucb.discount == 0.999 and cfg.state.path == "/tmp/r.state"
    bad = [
        ({"linucb": {"alpha": -1}}, "alpha must be >= 0"),
        ({"linucb": {"discount": 0}}, "discount must be in"),
        ({"linucb": {"ridge_lambda": 0}}, "ridge_lambda must be > 0"),
        ({"polar": {"mode": "fast"}}, "router.polar.mode: 'fast' is not one of"),
        ({"polar": {"epoch_length": 100, "max_epoch_length": 50}}, "max_epoch_length"),
        ({"feedback": {"reward_min": 1, "reward_max": 0}}, "reward_min"),
        ({"linucb": {"alpah": 1}}, "router.linucb.alpah: unknown key"),
    ]
    for data, message in bad:
        with pytest.raises(ConfigError, match=message):
            from_mapping(RouterConfig, data, "router")


def test_vector_features_take_the_requests_vector_and_refuse_text():
    ex = make_extractor(FeatureConfig(extractor="vector", dim=3))
    assert ex.dim == 3 and ex.fingerprint == FeatureConfig(extractor="vector", dim=3).fingerprint()
    with pytest.raises(ValueError, match="3-number context vectors .* the request gave text"):
        ex.extract("hello")


def _reference_hashed_block(text: str, config: FeatureConfig) -> np.ndarray:
    """The hashing extractor's definition, gram by gram in Python with zlib's CRC-32 (the C core
    computes the same counts in one call): the unit-norm hashed block before the shape block."""
    import re
    import zlib

    norm = text[: config.max_chars]
    norm = norm.lower() if config.lowercase else norm
    words = re.findall(r"\w+", norm)
    grams = [f"w{n}\x1f" + "\x1f".join(words[i:i + n])
             for n in config.word_ngrams for i in range(len(words) - n + 1)]
    padded = f" {' '.join(words)} "
    grams += [f"c{n}\x1f" + padded[i:i + n]
              for n in config.char_ngrams for i in range(len(padded) - n + 1)]
    buckets = config.dim - len(SHAPE_FEATURES)
    counts = np.zeros(buckets)
    for gram in grams:
        h = zlib.crc32(gram.encode(), config.hash_seed)
        counts[(h & 0x7FFFFFFF) % buckets] += -1.0 if h >> 31 else 1.0
    norm2 = np.sqrt(counts @ counts)
    return counts / norm2 if norm2 > 0 else counts


@pytest.mark.parametrize("config", [
    FeatureConfig(),
    FeatureConfig(dim=64, word_ngrams=(1, 3), char_ngrams=(2, 5), hash_seed=12345),
    FeatureConfig(dim=16, word_ngrams=(), char_ngrams=(1,), lowercase=False, max_chars=40),
    FeatureConfig(dim=40, word_ngrams=(2,), char_ngrams=(), hash_seed=2**32 - 1),
])
def test_c_hashing_equals_the_gram_by_gram_definition(config):
    rng = np.random.default_rng(3)
    alphabet = list("abcXYZ019 _.,\n\t-") + ["ü", "é", "東", "京", "ß", "😀", "\u0301", "İ"]
    texts = ["", " ", "a", "hello world", "Zürich 東京 😀 straße", "x" * 5000,
             "one two three four five six"]
    texts += ["".join(rng.choice(alphabet, size=rng.integers(0, 120))) for _ in range(200)]
    # ASCII prompts take the C core's whole-vector path (shape block included): every ASCII
    # character, the control and separator ones too (\x1c-\x1f are spaces to str.isspace).
    ascii_chars = [chr(c) for c in range(128)]
    texts += ["".join(rng.choice(ascii_chars, size=rng.integers(0, 200))) for _ in range(200)]
    texts += ["Translate to SQL: the TEN newest orders\n\nof customer_42 in Berlin!\x1f\x0b"]
    assert sum(t.isascii() for t in texts) > 200
    ex = HashingExtractor(config)
    for text in texts:
        # The shape block is not hashed: taken from the extractor's own shape function.
        shape = np.array(_shape(text[: config.max_chars], 0.5))
        expected = np.concatenate([_reference_hashed_block(text, config), shape])
        expected /= np.sqrt(expected @ expected)
        np.testing.assert_allclose(ex.extract(text), expected, rtol=0, atol=1e-12,
                                   err_msg=repr(text))
