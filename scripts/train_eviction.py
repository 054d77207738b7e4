"""Train the learned eviction policy: ``edge train-eviction`` runnable from a checkout.

    python scripts/train_eviction.py --generate scan:requests=200000,objects=2000,seed=1 \\
        --budget 5%,20% --out models/eviction.onnx [--eval-trace T] [--seed S] ...

Every option is the command's (``--help`` lists them); see ``edge.learned.train`` for the
environment, reward and learning rule.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.learned.train_command import train_eviction  # noqa: E402

if __name__ == "__main__":
    train_eviction(prog_name="train_eviction.py")
