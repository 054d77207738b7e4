"""Write a tiny llama base GGUF and LoRA adapters for it: the command line of edge.tiny_models.

    python scripts/make_tiny_models.py OUTDIR [--adapters N] [--seed S] [shape options]

The code lives in the package (``edge demo`` builds its models with it); this wrapper keeps the
command and ``from make_tiny_models import ...`` (the benchmarks') working.
"""

from __future__ import annotations

import sys

from edge.tiny_models import *  # noqa: F403 - this script is the module's command line
from edge.tiny_models import main

if __name__ == "__main__":
    sys.exit(main())
