"""Thin, checked wrappers over the compiled C core (see native/include/edge.h)."""

from edge._native.index import FEATURE_NAMES, N_FEATURES, NativeIndex, NativeReplayCounts

__all__ = ["FEATURE_NAMES", "N_FEATURES", "NativeIndex", "NativeReplayCounts"]
