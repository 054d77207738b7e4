"""Request -> fixed-size float64 vector.

Extractors are registered by name in ``EXTRACTORS`` and chosen by ``FeatureConfig.extractor``;
the llama.cpp backend will register one built on the base model's own embedding. The built-in
``hashing`` extractor is deterministic across processes and machines (CRC-32, not Python's
salted ``hash``), needs no vocabulary, and costs O(len(prompt)).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from edge._native.hashing import N_SHAPE_FEATURES, NgramHasher
from edge.errors import ConfigError
from edge.router.config import FeatureConfig


class FeatureExtractor(Protocol):
    dim: int
    fingerprint: str

    def extract(self, text: str) -> np.ndarray: ...

    def extract_batch(self, texts: Sequence[str]) -> np.ndarray: ...


EXTRACTORS: dict[str, Callable[[FeatureConfig], FeatureExtractor]] = {}


def register_extractor(name: str):
    def decorate(factory):
        if name in EXTRACTORS and EXTRACTORS[name] is not factory:
            raise TypeError(f"feature extractor name {name!r} is taken")
        EXTRACTORS[name] = factory
        return factory
    return decorate


def make_extractor(config: FeatureConfig) -> FeatureExtractor:
    try:
        factory = EXTRACTORS[config.extractor]
    except KeyError:
        raise ConfigError(f"features.extractor: unknown extractor {config.extractor!r} "
                          f"(known: {', '.join(sorted(EXTRACTORS))})") from None
    return factory(config)


_WORD_RE = re.compile(r"\w+", re.UNICODE)
# Shape features: bias, log length in chars, log length in words, digit / uppercase /
# punctuation / whitespace-line fractions. The bias gives the linear models an intercept.
SHAPE_FEATURES = ("bias", "log_chars", "log_words", "digit_frac", "upper_frac", "punct_frac",
                  "newline_frac")
assert len(SHAPE_FEATURES) == N_SHAPE_FEATURES  # the C core writes the block for ASCII prompts
# Weight of the shape block against the (unit-norm) hashed block before the final normalisation.
_SHAPE_WEIGHT = 0.5


@register_extractor("hashing")
class HashingExtractor:
    """Signed feature hashing of word and character n-grams, plus shape features, L2-normalised.

    The grams of a prompt: its words (``\\w+`` of the lowercased text) taken n at a time for
    each n of ``word_ngrams``, as "w<n>\\x1f" + the words joined by "\\x1f"; and its padded
    text (" " + the words joined by spaces + " ") taken n code points at a time for each n of
    ``char_ngrams``, as "c<n>\\x1f" + the characters. Each gram's UTF-8 is hashed with CRC-32
    (zlib's) from ``hash_seed``: the low 31 bits pick the bucket, bit 31 the sign. The C core
    does the hashing (``edge_hash_ngrams``), and for an ASCII prompt the whole vector
    (``edge_hash_features_ascii``).

    The last ``len(SHAPE_FEATURES)`` coordinates are the shape block; the rest are hash buckets.
    A sign bit taken from the hash makes collisions cancel in expectation instead of adding up.
    """

    def __init__(self, config: FeatureConfig) -> None:
        if config.dim <= len(SHAPE_FEATURES):
            raise ConfigError(f"features.dim: the hashing extractor needs more than "
                              f"{len(SHAPE_FEATURES)} dimensions, got {config.dim}")
        self.config = config
        self.dim = config.dim
        self.fingerprint = config.fingerprint()
        self._buckets = config.dim - len(SHAPE_FEATURES)
        self._hasher = NgramHasher(config.word_ngrams, config.char_ngrams, config.hash_seed,
                                   self._buckets)

    def extract(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"a prompt must be a str, got {type(text).__name__}")
        raw = text[: self.config.max_chars]
        out = np.empty(self.dim, dtype=np.float64)
        if raw.isascii():  # a flag of the str: free to ask
            self._hasher.ascii_features(raw.encode("ascii"), self.config.lowercase,
                                        _SHAPE_WEIGHT, out)
            return out
        norm = raw.lower() if self.config.lowercase else raw
        # The hashed block, unit-norm (all zero when there is no gram), in one C call.
        self._hasher.hash_into(_WORD_RE.findall(norm), out)
        out[self._buckets:] = _shape(raw, _SHAPE_WEIGHT)
        return out / math.sqrt(float(out @ out))  # never zero: the bias is always 1

    def extract_batch(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float64)
        for i, text in enumerate(texts):
            out[i] = self.extract(text)
        return out


@register_extractor("vector")
class VectorExtractor:
    """For requests that carry their context as a vector of ``dim`` numbers already (a trace's
    context column, an upstream embedding): there is no text to extract from."""

    def __init__(self, config: FeatureConfig) -> None:
        self.dim = config.dim
        self.fingerprint = config.fingerprint()

    def extract(self, text: str) -> np.ndarray:
        raise ValueError(f"this router's features are {self.dim}-number context vectors "
                         "(features.extractor: vector); the request gave text")

    def extract_batch(self, texts: Sequence[str]) -> np.ndarray:
        return self.extract("")


def _shape(text: str, weight: float = 1.0) -> tuple[float, ...]:
    """The shape block (``SHAPE_FEATURES``), each value times ``weight``."""
    n = len(text)
    if n == 0:
        return (weight, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    # map() over str methods counts in C; the same counts as a loop over the characters.
    digits = sum(map(str.isdigit, text))
    upper = sum(map(str.isupper, text))
    punct = n - sum(map(str.isalnum, text)) - sum(map(str.isspace, text))
    lines = text.count("\n")
    words = len(_WORD_RE.findall(text))
    # Log lengths scaled so a 4k-char prompt lands near 1, like the fractions.
    return (weight, weight * (math.log1p(n) / _LOG_4096), weight * (math.log1p(words) / _LOG_1024),
            weight * (digits / n), weight * (upper / n), weight * (punct / n),
            weight * min(1.0, 20 * lines / n))


_LOG_4096 = math.log1p(4096)
_LOG_1024 = math.log1p(1024)
