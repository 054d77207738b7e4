"""The feature matrix's column names and order: native/include/edge.h is the one list.

``edge._native.FEATURE_NAMES`` is derived from the header's ``edge_feature`` enum through cffi.
These tests read the header text themselves (so a stale build of the C extension is caught too)
and hold the order to a pinned copy: a shipped learned policy (an ONNX model) takes its input
columns in this order, so any reorder or rename must fail here until the models are retrained
or re-exported and this copy is changed with them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edge._native import FEATURE_NAMES, N_FEATURES, NativeIndex

HEADER = Path(__file__).resolve().parents[1] / "native" / "include" / "edge.h"

# The input order of shipped models. Deliberately a second copy: change it only together with
# native/include/edge.h and every model that reads these columns.
SHIPPED_ORDER = ("age", "size", "accesses", "iat", "load_cost", "residency", "past_accesses",
                 "past_residencies")


def header_features(text: str) -> list[tuple[str, int]]:
    """(name, value) of the ``edge_feature`` enum's EDGE_FEAT_ members, in source order."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    body = re.search(r"typedef\s+enum\s*\{([^}]*)\}\s*edge_feature\s*;", text)
    assert body, "edge.h has no `typedef enum { ... } edge_feature;`"
    members = []
    for entry in filter(None, (e.strip() for e in body.group(1).split(","))):
        match = re.fullmatch(r"(EDGE_\w+)\s*=\s*(\d+)", entry)
        assert match, f"edge_feature member {entry!r} needs an explicit value"
        members.append(match.groups())
    return [(name.removeprefix("EDGE_FEAT_").lower(), int(value))
            for name, value in members if name.startswith("EDGE_FEAT_")]


def test_feature_names_are_the_headers_enum_in_order():
    members = header_features(HEADER.read_text())
    assert [value for _, value in members] == list(range(N_FEATURES)), \
        "the header's EDGE_FEAT_ values must be 0, 1, ... in source order"
    assert tuple(name for name, _ in members) == FEATURE_NAMES
    assert f"EDGE_N_FEATURES = {len(members)}" in HEADER.read_text()


def test_feature_order_is_the_shipped_models_order():
    assert FEATURE_NAMES == SHIPPED_ORDER
    assert tuple(name for name, _ in header_features(HEADER.read_text())) == SHIPPED_ORDER


def test_the_header_check_fails_on_a_reorder_or_a_rename():
    text = HEADER.read_text()
    swapped = text.replace("EDGE_FEAT_AGE = 0", "EDGE_FEAT_SIZE = 0", 1).replace(
        "EDGE_FEAT_SIZE = 1", "EDGE_FEAT_AGE = 1", 1)
    assert tuple(name for name, _ in header_features(swapped)) != SHIPPED_ORDER
    renamed = text.replace("EDGE_FEAT_IAT", "EDGE_FEAT_GAP", 1)
    assert tuple(name for name, _ in header_features(renamed)) != SHIPPED_ORDER


def test_each_named_column_holds_its_quantity():
    idx = NativeIndex()
    idx.insert(7, 300, now=0.0)  # an earlier residency of three accesses (the ghost list)
    idx.touch(7, now=1.0)
    idx.touch(7, now=2.0)
    idx.remove(7)
    slot = idx.insert(7, 300, now=10.0, load_cost=0.5)
    idx.touch(7, now=14.0)
    row = dict(zip(FEATURE_NAMES, idx.features([slot], now=20.0)[0].tolist(), strict=True))
    assert row == {"age": 6.0, "size": 300.0, "accesses": 2.0, "iat": 4.0, "load_cost": 0.5,
                   "residency": 10.0, "past_accesses": 3.0, "past_residencies": 1.0}
    assert np.float32(row["age"]) == row["age"]


def test_an_index_that_forgets_removed_keys_reports_no_past():
    # The simulator's LRU / FIFO replay runs without the ghost list (edge/sim/replay.py).
    idx = NativeIndex(remember_removed=False)
    idx.insert(7, 300, now=0.0)
    idx.touch(7, now=1.0)
    idx.remove(7)
    slot = idx.insert(7, 300, now=10.0)
    row = dict(zip(FEATURE_NAMES, idx.features([slot], now=20.0)[0].tolist(), strict=True))
    assert row["past_accesses"] == row["past_residencies"] == 0.0
    assert idx.totals().remembered == 0
