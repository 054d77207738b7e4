"""Probe: how the learned eviction policy's time inputs depend on the clock's unit.

Age, inter-access time and residency are seconds (the trace's timestamps, the daemon's clock).
The shipped model's training traces ran at about 1,000 requests/s (scan) and 10 (tenants); a
daemon's rate is neither. Two questions, each answered on the training path (``evaluate``,
equal to the daemon's ``PagedCache`` path: ``tests/test_learned_train.py``):

1. The shipped model on the held-out traces (``bench_eviction.py``'s) with every timestamp
   multiplied by each ``--scale``: how much its hit ratio moves with the request rate.
2. A logical clock: the MANIFEST's imitation fit with every trace's timestamps replaced by
   request indices (times each ``--logical-unit``), scored on the selection traces the same
   way, against the same fit in seconds.

    python scripts/probe_time_units.py --out docs/results/probe_time_units.json

About a minute and a half on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_eviction  # noqa: E402
import probe_listwise_fit as listwise  # noqa: E402 - the MANIFEST's training inputs
from benchlib import emit, machine  # noqa: E402

from edge.learned import train as T  # noqa: E402
from edge.learned.network import DuelingQNet  # noqa: E402
from edge.learned.train_command import generate_trace, parse_generate  # noqa: E402
from edge.sim.specs import parse_budget_list, working_set_bytes  # noqa: E402
from edge.sim.trace import Trace  # noqa: E402


def retimed(trace: Trace, scale: float | None = None, unit: float | None = None) -> Trace:
    """``trace`` with its timestamps times ``scale``, or (``unit``) request indices x unit."""
    times = trace.times * scale if unit is None else np.arange(len(trace)) * unit
    return Trace(times, trace.keys, trace.sizes, trace.load_costs)


def hit_ratios(net: DuelingQNet, which: str, **clock) -> dict[str, float]:
    runs, names = [], []
    for name, _, trace in bench_eviction.generated_workloads(150_000, which):
        trace = retimed(trace, **clock)
        prepared = T.prepare_trace(trace, name)
        for f in listwise.EVALUATION_BUDGETS:
            runs.append(T.Run(prepared, bench_eviction.budget_bytes(trace, f)))
            names.append(f"{name} {f:.0%}")
    results = T.evaluate(net, runs, **listwise.CANDIDATES)
    return {n: r.hit_ratio for n, r in zip(names, results, strict=True)}


def imitation_fit(**clock) -> DuelingQNet:
    """The MANIFEST's command (no one-hit unit), on its traces retimed."""
    pairs = []
    for spec in listwise.TRAINING:
        trace = retimed(generate_trace(*parse_generate(spec)), **clock)
        working_set = working_set_bytes(trace.keys, trace.sizes)
        pairs += [(T.prepare_trace(trace, spec), b.nbytes)
                  for b in parse_budget_list(listwise.TRAINING_BUDGETS, working_set)]
    config = T.TrainConfig(objective="imitation", seed=0, one_hit_weights=(0.0,),
                           **listwise.CANDIDATES)
    return T.imitate(pairs, config).net


def points(new: dict[str, float], old: dict[str, float]) -> dict[str, float]:
    return {k: 100 * (new[k] - old[k]) for k in old}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, nargs="+", default=[1000.0])
    parser.add_argument("--logical-unit", type=float, nargs="+", default=[1.0, 0.001])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if any(x <= 0 for x in args.scale + args.logical_unit):
        parser.error("every --scale and --logical-unit must be > 0")
    start = time.perf_counter()

    shipped = DuelingQNet.from_parameters(dict(np.load(listwise.SHIPPED_PARAMETERS)))
    held_out = {"seconds": hit_ratios(shipped, "held-out", scale=1.0)}
    for scale in args.scale:
        held_out[f"seconds x {scale:g}"] = hit_ratios(shipped, "held-out", scale=scale)
    print("shipped model, held-out traces, timestamps scaled:", file=sys.stderr)
    for label, row in held_out.items():
        print(f"  {label:<16}" + " ".join(f"{k} {v:.4f}" for k, v in row.items()
                                          if k.endswith(" 5%")), file=sys.stderr)

    selection = {"seconds": hit_ratios(imitation_fit(scale=1.0), "selection", scale=1.0)}
    for unit in args.logical_unit:
        selection[f"requests x {unit:g}"] = hit_ratios(imitation_fit(unit=unit), "selection",
                                                       unit=unit)
    print("the MANIFEST's fit on the selection traces, mean points over seconds:",
          file=sys.stderr)
    for label, row in selection.items():
        diff = points(row, selection["seconds"])
        print(f"  {label:<16} {np.mean(list(diff.values())):+.2f} (min {min(diff.values()):+.2f})",
              file=sys.stderr)

    emit({"benchmark": "probe_time_units", "machine": machine(),
          "inputs": {"scale": args.scale, "logical_unit": args.logical_unit,
                     "training": listwise.TRAINING, "candidates": listwise.CANDIDATES},
          "held_out_shipped_model": held_out,
          "selection_fit": {label: {"hit_ratio": row,
                                    "points_over_seconds": points(row, selection["seconds"])}
                            for label, row in selection.items()},
          "wall_seconds": time.perf_counter() - start}, args.out)


if __name__ == "__main__":
    main()
