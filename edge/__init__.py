"""edge: page LoRA adapters and MoE experts under a byte budget on one device.

    import edge
    with edge.Runtime.from_config("policies/polar.yaml", backend=backend) as runtime:
        outcome = runtime.handle(edge.InferenceRequest(prompt="...", request_id="r1"))

The names below are handed on lazily (PEP 562): ``import edge`` stays cheap, and reading a policy
file does not load the C core or the router.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edge.errors import EdgeError

__version__ = "0.1.0"

_HOME = {
    "Runtime": "edge.runtime", "InferenceRequest": "edge.runtime", "Outcome": "edge.runtime",
    "Catalogue": "edge.catalogue", "CatalogueEntry": "edge.catalogue",
    "EdgeConfig": "edge.config", "load_config": "edge.config",
    "PagedCache": "edge.cache.paged",
}

__all__ = ["Catalogue", "CatalogueEntry", "EdgeConfig", "EdgeError", "InferenceRequest",
           "Outcome", "PagedCache", "Runtime", "__version__", "load_config"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'edge' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from edge.cache.paged import PagedCache
    from edge.catalogue import Catalogue, CatalogueEntry
    from edge.config import EdgeConfig, load_config
    from edge.runtime import InferenceRequest, Outcome, Runtime
