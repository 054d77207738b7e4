"""``NgramHasher``: the C core's signed n-gram feature hashing (``edge_hash_ngrams``, and
``edge_hash_features_ascii`` for the whole vector of an ASCII prompt).

The router's ``hashing`` extractor calls it once per prompt: hashing gram by gram from Python
(``zlib.crc32`` per gram) was most of the route step, and between a daemon's requests (caches
cold after llama.cpp's evaluation) every Python and numpy step costs several times its warm
time (scripts/bench_route_step.py), so an ASCII prompt takes one C call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge._native.index import _OK, _raise, ffi, lib

N_SHAPE_FEATURES: int = lib.EDGE_N_SHAPE_FEATURES


class NgramHasher:
    """Signed, normalised bucket counts of a prompt's word and character n-grams, for one fixed
    setting."""

    def __init__(self, word_ngrams: Sequence[int], char_ngrams: Sequence[int], seed: int,
                 n_buckets: int) -> None:
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be at least 1, got {n_buckets}")
        self._word = ffi.new("uint32_t[]", list(word_ngrams) or [0])
        self._char = ffi.new("uint32_t[]", list(char_ngrams) or [0])
        self._n_word, self._n_char = len(word_ngrams), len(char_ngrams)
        self._seed = seed
        self.n_buckets = n_buckets

    def hash_into(self, words: Sequence[str], out: np.ndarray) -> int:
        """Write the bucket counts of a prompt's words (in order), divided by their L2 norm (0
        when there is no gram), into ``out[:n_buckets]`` (a C-contiguous float64 array); the
        number of grams hashed."""
        if out.dtype != np.float64 or not out.flags.c_contiguous or len(out) < self.n_buckets:
            raise ValueError(f"out must be C-contiguous float64 with at least {self.n_buckets} "
                             f"entries, got {out.dtype} {out.shape}")
        joined = "\x1f".join(words).encode()
        padded = f" {' '.join(words)} ".encode()
        n_grams = ffi.new("uint32_t *")
        status = lib.edge_hash_ngrams(joined, len(joined), padded, len(padded), self._word,
                                      self._n_word, self._char, self._n_char, self._seed,
                                      1, ffi.from_buffer("double[]", out), self.n_buckets,
                                      n_grams)
        if status != _OK:
            _raise(status, "edge_hash_ngrams")
        return n_grams[0]

    def ascii_features(self, text: bytes, lowercase: bool, shape_weight: float,
                       out: np.ndarray) -> int:
        """The whole feature vector of an ASCII prompt (``edge_hash_features_ascii``) into
        ``out`` (C-contiguous float64, the extractor's dim); the number of grams hashed."""
        if out.dtype != np.float64 or not out.flags.c_contiguous \
                or len(out) != self.n_buckets + lib.EDGE_N_SHAPE_FEATURES:
            raise ValueError(f"out must be C-contiguous float64 of "
                             f"{self.n_buckets + lib.EDGE_N_SHAPE_FEATURES}, got {out.dtype} "
                             f"{out.shape}")
        n_grams = ffi.new("uint32_t *")
        status = lib.edge_hash_features_ascii(text, len(text), lowercase, self._word,
                                              self._n_word, self._char, self._n_char, self._seed,
                                              shape_weight, ffi.from_buffer("double[]", out),
                                              len(out), n_grams)
        if status != _OK:
            _raise(status, "edge_hash_features_ascii")
        return n_grams[0]
