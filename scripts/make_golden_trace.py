"""Write tests/data/golden_trace.csv: the small fixed trace of the golden policy tests.

2000 requests over 200 keys (192 of them drawn at least once), Zipf-like popularity (weight of
the key of rank r is 1 / r**0.9), each key with one size drawn log-uniformly from 100 B to 10 kB.
Only the standard library's seeded ``random.Random`` is used, so the file is reproducible byte
for byte:

    python scripts/make_golden_trace.py            # rewrites the committed file
    python scripts/make_golden_trace.py --check    # exits 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import io
import math
import random
import sys
from pathlib import Path

SEED = 20261101
N_KEYS = 200
N_REQUESTS = 2000
ZIPF_ALPHA = 0.9
MIN_SIZE, MAX_SIZE = 100, 10_000
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden_trace.csv"


def make_trace() -> str:
    rng = random.Random(SEED)
    keys = list(range(N_KEYS))
    rng.shuffle(keys)  # popularity rank is unrelated to the key number
    sizes = {k: int(round(math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE)))))
             for k in range(N_KEYS)}
    weights = [1.0 / (rank + 1) ** ZIPF_ALPHA for rank in range(N_KEYS)]
    out = io.StringIO()
    out.write("time,key,size\n")
    for t, key in enumerate(rng.choices(keys, weights, k=N_REQUESTS)):
        out.write(f"{t},{key},{sizes[key]}\n")
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = make_trace()
    if args.check:
        same = OUT.exists() and OUT.read_text() == text
        print(f"{OUT}: {'up to date' if same else 'DIFFERS from the generator'}")
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT} ({N_REQUESTS} requests, {N_KEYS} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
