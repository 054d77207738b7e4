"""``NgramHasher``: the C core's signed n-gram feature hashing (``edge_hash_ngrams``).

The router's ``hashing`` extractor calls it once per prompt; hashing each gram from Python
(``zlib.crc32`` per gram) cost about 60 µs on a short prompt, most of the route step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge._native.index import _OK, _raise, ffi, lib


class NgramHasher:
    """Signed bucket counts of a prompt's word and character n-grams, for one fixed setting."""

    def __init__(self, word_ngrams: Sequence[int], char_ngrams: Sequence[int], seed: int,
                 n_buckets: int) -> None:
        if n_buckets < 1:
            raise ValueError(f"n_buckets must be at least 1, got {n_buckets}")
        self._word = ffi.new("uint32_t[]", list(word_ngrams) or [0])
        self._char = ffi.new("uint32_t[]", list(char_ngrams) or [0])
        self._n_word, self._n_char = len(word_ngrams), len(char_ngrams)
        self._seed = seed
        self._n_buckets = n_buckets

    def counts(self, words: Sequence[str]) -> tuple[np.ndarray, int]:
        """(float64 counts of n_buckets, grams hashed) for the words of a prompt, in order."""
        joined = "\x1f".join(words).encode()
        padded = f" {' '.join(words)} ".encode()
        out = np.empty(self._n_buckets, dtype=np.float64)
        n_grams = ffi.new("uint32_t *")
        status = lib.edge_hash_ngrams(joined, len(joined), padded, len(padded), self._word,
                                      self._n_word, self._char, self._n_char, self._seed,
                                      ffi.cast("double *", out.ctypes.data), self._n_buckets,
                                      n_grams)
        if status != _OK:
            _raise(status, "edge_hash_ngrams")
        return out, n_grams[0]
