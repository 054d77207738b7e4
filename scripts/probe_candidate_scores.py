"""Is the learned policy limited by its model or by what it sees? Hand scores over its candidates.

Replays ``bench_eviction``'s held-out traces (or ``--workloads selection``; the same
generators, seeds and budgets) through a policy that ranks the learned policy's candidates
(``k_tail`` LRU-tail, ``k_head`` MRU-head and ``k_rand`` drawn; 8 + 0 + 56 by default, the
shipped model's rule is ``--k-head 16``) with a fixed score instead of the network, beside the
classical policies:

    hand:        log1p(size) - log1p(accesses) + log1p(age) / 2   (docs/cache.md's hand score)
    hand+ghost:  the same with accesses + the key's accesses before its last eviction,
                 remembered for the last ``--ghost`` evicted keys (a history the C core's
                 features do not carry: an object's count starts again when it is re-inserted,
                 so a returning hot object looks like a one-hit scan object; ARC's and
                 S3-FIFO's ghost lists are that history; the C core's feature schema 2 now
                 carries it)
    hindsight:   the candidates ranked knowing the future, by the rule the imitation fits
                 (``edge.learned.train.HindsightAgent``): the ceiling of any score fitted to
                 that ranking over these candidates

A hand score that beats the model on the same candidates says the training is the limit; a
history column that lifts the hand score says the features are; a hindsight column below a
classical policy says the candidates are. Prints a table; ``--out`` writes JSON.

    python scripts/probe_candidate_scores.py [--requests 150000] [--ghost 4096]
        [--k-tail 8] [--k-head 0] [--k-rand 56] [--skip-hand] [--workloads held-out]
        [--out F]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eviction import (  # noqa: E402
    BUDGETS,
    WORKLOAD_SETS,
    budget_bytes,
    generated_workloads,
)
from benchlib import machine  # noqa: E402

from edge.cache.policies import POLICIES, EvictionPolicy, register_policy  # noqa: E402
from edge.config import CacheConfig  # noqa: E402
from edge.learned.train import HindsightAgent, Run, prepare_trace, replay_many  # noqa: E402
from edge.sim.replay import replay_arrays  # noqa: E402
from edge.sim.specs import working_set_bytes  # noqa: E402

CLASSICAL = ("lru", "arc", "s3fifo", "gdsf")


class HandScore(EvictionPolicy):
    """The learned policy's candidates ranked by the hand score (see the module doc)."""

    name = "probe-hand-score"

    @dataclass(frozen=True)
    class Params:
        ghost: int = 0  # evicted keys whose access counts are remembered (0: no history)
        k_tail: int = 8
        k_rand: int = 56
        k_head: int = 0

    def bind(self, view) -> None:
        super().bind(view)
        self._evicted: OrderedDict = OrderedDict()  # evicted key -> accesses before eviction
        self._history: dict = {}  # resident key -> accesses before its last eviction

    def on_insert(self, key, slot, size) -> None:
        if self.params.ghost:
            self._history[key] = self._evicted.pop(key, 0.0)

    def on_evict(self, key, slot) -> None:
        if self.params.ghost:
            accesses = float(self.view.features(np.array([slot], np.int32))[0, 2])
            self._evicted[key] = accesses + self._history.pop(key, 0.0)
            while len(self._evicted) > self.params.ghost:
                self._evicted.popitem(last=False)

    def on_remove(self, key, slot) -> None:
        self._history.pop(key, None)

    def victims(self, need_bytes: int) -> list:
        view = self.view
        slots = view.candidates(self.params.k_tail, self.params.k_rand, self.params.k_head)
        keys = [view.key_of_slot(int(s)) for s in slots]
        features = view.features(slots)
        column = view.feature_names.index
        accesses = features[:, column("accesses")].astype(np.float64)
        if self.params.ghost:
            accesses += np.array([self._history.get(k, 0.0) for k in keys])
        score = (np.log1p(features[:, column("size")]) - np.log1p(accesses)
                 + 0.5 * np.log1p(features[:, column("age")]))
        chosen, freed = [], 0
        for i in np.argsort(-score, kind="stable"):
            chosen.append(keys[i])
            freed += view.size_of(keys[i])
            if freed >= need_bytes:
                break
        return chosen

    def victim(self):
        chosen = self.victims(1)
        return chosen[0] if chosen else None


def probe(requests: int, ghost: int, k_tail: int, k_rand: int, k_head: int = 0,
          hand: bool = True, workloads: str = "held-out") -> dict:
    register_policy(HandScore)
    try:
        return _probe(requests, ghost, k_tail, k_rand, k_head, hand, workloads)
    finally:
        del POLICIES[HandScore.name]  # the registry is global: leave it as it was


def hindsight_hit_ratio(trace, budget: int, k_tail: int, k_rand: int, k_head: int) -> float:
    runs = [Run(prepare_trace(trace, "probe"), budget)]
    [result] = replay_many(runs, HindsightAgent(runs), k_tail=k_tail, k_rand=k_rand,
                           k_head=k_head)
    return result.hit_ratio


def _probe(requests: int, ghost: int, k_tail: int, k_rand: int, k_head: int,
           hand: bool, workloads: str) -> dict:
    rows = {}
    for name, _, trace in generated_workloads(requests, workloads):
        working_set = working_set_bytes(trace.keys, trace.sizes)
        for label, fraction in BUDGETS.items():
            if label == "large":
                continue  # every policy is within a point of the oracle there
            budget = budget_bytes(trace, fraction, working_set)
            row = {}
            for policy in CLASSICAL:
                row[policy] = replay_arrays(trace.keys, trace.sizes, policy, budget,
                                            times=trace.times).hit_ratio
            for column, history in ((("hand", 0), ("hand+ghost", ghost)) if hand else ()):
                config = CacheConfig(policy=HandScore.name, budget=budget, policy_params={
                    "ghost": history, "k_tail": k_tail, "k_rand": k_rand, "k_head": k_head})
                row[column] = replay_arrays(trace.keys, trace.sizes, config, budget,
                                            times=trace.times).hit_ratio
            row["hindsight"] = hindsight_hit_ratio(trace, budget, k_tail, k_rand, k_head)
            rows[f"{name} {fraction:.0%}"] = row
            print(f"  {name} {fraction:.0%} done", file=sys.stderr)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=150_000)
    p.add_argument("--ghost", type=int, default=4096, help="evicted keys remembered")
    p.add_argument("--k-tail", type=int, default=8)
    p.add_argument("--k-rand", type=int, default=56)
    p.add_argument("--k-head", type=int, default=0)
    p.add_argument("--skip-hand", action="store_true",
                   help="the classical and hindsight columns alone (the hand scores replay "
                        "through Python per request: minutes)")
    p.add_argument("--workloads", choices=sorted(WORKLOAD_SETS), default="held-out",
                   help="bench_eviction's workload set (selection: the traces settings are "
                        "chosen on)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    rows = probe(args.requests, args.ghost, args.k_tail, args.k_rand, args.k_head,
                 hand=not args.skip_hand, workloads=args.workloads)
    columns = [*CLASSICAL, *(() if args.skip_hand else ("hand", "hand+ghost")), "hindsight"]
    print("| trace, budget | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    if args.out:
        result = {"probe": "candidate_scores", "inputs": vars(args), "machine": machine(),
                  "hit_ratios": rows}
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
