"""Probe: would a listwise fit of the learned eviction score beat the shipped least-squares one?

The shipped model (``edge train-eviction --objective imitation``, models/MANIFEST) fits a linear
score to each decision's hindsight ranking by least squares, which weighs every candidate's
rank alike, though a decision only acts on its first victims. This probe collects the same data
as the MANIFEST's command (the same traces, budgets, candidates and seed; it checks that its
least-squares fit is the shipped model's parameters) and fits the same linear score by softmax
cross-entropy per decision instead (ListNet: the target distribution is the softmax of the
hindsight ranks over ``--tau``, so a small tau weighs the top victims most), then replays each
on the selection traces (``bench_eviction.py --workloads selection``: seeds 71-76, never
reported) at 5, 20 and 50 % of the working set with the numpy forward pass (equal to ONNX
Runtime's to 1e-5, ``tests/test_learned_onnx.py``).

    python scripts/probe_listwise_fit.py --tau 0.3 1 3 --out docs/results/probe_listwise_fit.json

About a minute on 2 cores (the collection 10 s, each model's replay 15-25 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_eviction  # noqa: E402 - its selection workloads
from benchlib import emit, machine  # noqa: E402

from edge.learned import train as T  # noqa: E402
from edge.learned.network import DuelingQNet  # noqa: E402
from edge.learned.train_command import generate_trace, parse_generate  # noqa: E402
from edge.sim.specs import parse_budget_list, working_set_bytes  # noqa: E402

# The MANIFEST's training command, as data.
CANDIDATES = dict(k_tail=8, k_rand=104, k_head=16)
TRAINING = ["scan:requests=100000,objects=2000,sigma=1,seed=1,period=10000,burst=2000",
            "tenants:requests=100000,objects=400,tenants=8,sigma=1,seed=2"]
TRAINING_BUDGETS = "5%,20%"  # --budget, read by the command's parser
EVALUATION_BUDGETS = (0.05, 0.2, 0.5)
SHIPPED_PARAMETERS = Path(__file__).resolve().parents[1] / "models" / "eviction.npz"


class CollectingAgent(T.ImitationAgent):
    """The imitation's collection, keeping every row and rank (the trainer keeps only the
    normal equations)."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__(rng)
        self.inputs: list[np.ndarray] = []
        self.ranks: list[np.ndarray] = []
        self.rows_per_decision: list[int] = []

    def observe(self, inputs, decisions, replays) -> None:
        ranks = T.decision_ranks(self._runs, decisions, replays)
        self.accumulate(inputs, ranks)
        self.inputs.append(inputs[:, self.columns].astype(np.float64))
        self.ranks.append(ranks)
        self.rows_per_decision += [len(d.objects) for d in decisions]


def collect(seed: int) -> CollectingAgent:
    """The same replays, in the same order and with the same draws, as ``imitate``."""
    pairs = []
    for spec in TRAINING:
        trace = generate_trace(*parse_generate(spec))
        prepared = T.prepare_trace(trace, spec)
        working_set = working_set_bytes(trace.keys, trace.sizes)
        pairs += [(prepared, b.nbytes) for b in parse_budget_list(TRAINING_BUDGETS, working_set)]
    config = T.TrainConfig(objective="imitation", seed=seed, **CANDIDATES)
    rng = np.random.default_rng(config.seed)
    agent = CollectingAgent(rng)
    runs = [T.Run(t, b, 1, int(rng.integers(2**63)), start, min(start + config.segment, len(t)))
            for t, b in pairs for start in range(0, len(t), config.segment)]
    agent.begin(runs)
    T.replay_many(runs, agent, **CANDIDATES)
    return agent


def listwise_fit(x: np.ndarray, ranks: np.ndarray, rows: np.ndarray, tau: float,
                 l2: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Weights minimising the mean over decisions of the cross-entropy between softmax(ranks /
    tau) and softmax(x @ w) within each decision, plus l2 / 2 |w|^2: convex and of a few
    weights, so Newton's method with step halving (no optimiser dependency)."""
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
    decision = np.repeat(np.arange(len(rows)), rows)
    n = len(rows)

    def softmax(z):
        e = np.exp(z - np.maximum.reduceat(z, starts)[decision])
        total = np.add.reduceat(e, starts)
        return e / total[decision], np.log(total)

    target, _ = softmax(ranks / tau)

    def loss(w):
        s = x @ w
        s = s - np.maximum.reduceat(s, starts)[decision]
        p, log_total = softmax(s)
        return -(target * (s - log_total[decision])).sum() / n + 0.5 * l2 * w @ w, p

    w = np.zeros(x.shape[1])
    value, p = loss(w)
    for _ in range(iterations):
        gradient = x.T @ (p - target) / n + l2 * w
        per_decision = np.add.reduceat(p[:, None] * x, starts)  # E_p[x] of each decision
        hessian = ((x.T @ (p[:, None] * x) - per_decision.T @ per_decision) / n
                   + l2 * np.eye(len(w)))
        step = np.linalg.solve(hessian, gradient)
        t = 1.0
        while True:
            candidate, p_candidate = loss(w - t * step)
            if candidate <= value or t < 1e-6:
                break
            t /= 2
        w, value, p = w - t * step, candidate, p_candidate
        if abs(gradient @ step) < 1e-10:
            break
    return w


def selection_hit_ratios(net: DuelingQNet, requests: int) -> dict[str, float]:
    runs, names = [], []
    for name, _, trace in bench_eviction.generated_workloads(requests, "selection"):
        prepared = T.prepare_trace(trace, name)
        for f in EVALUATION_BUDGETS:
            runs.append(T.Run(prepared, bench_eviction.budget_bytes(trace, f)))
            names.append(f"{name} {f:.0%}")
    results = T.evaluate(net, runs, **CANDIDATES)
    return {n: r.hit_ratio for n, r in zip(names, results, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tau", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=150_000,
                        help="requests per selection trace (bench_eviction.py's default)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if any(t <= 0 for t in args.tau):
        parser.error(f"--tau {args.tau}: every temperature must be > 0")

    start = time.perf_counter()
    agent = collect(args.seed)
    x = np.concatenate(agent.inputs)
    ranks = np.concatenate(agent.ranks)
    rows = np.array(agent.rows_per_decision)
    print(f"collected {len(rows):,} decisions, {len(x):,} candidate rows "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    names = [T.INPUT_NAMES[c] for c in agent.columns]
    weights, intercept, _ = agent.solve()
    shipped_parameters = np.load(SHIPPED_PARAMETERS)
    gap = max(float(np.abs(v - shipped_parameters[k]).max())
              for k, v in DuelingQNet.linear(weights, intercept).parameters().items())
    print(f"least squares against {SHIPPED_PARAMETERS}: largest parameter difference {gap:.1e}",
          file=sys.stderr)
    fits = {"least squares (shipped)": {
        "weights": dict(zip(names, weights[agent.columns].tolist(), strict=True)),
        "hit_ratio": selection_hit_ratios(DuelingQNet.linear(weights, intercept),
                                          args.requests)}}
    for tau in args.tau:
        w = listwise_fit(x, ranks, rows, tau)
        full = np.zeros(T.N_INPUTS)
        full[agent.columns] = w
        fits[f"listwise, tau {tau:g}"] = {
            "weights": dict(zip(names, w.tolist(), strict=True)),
            "hit_ratio": selection_hit_ratios(DuelingQNet.linear(full, 0.0), args.requests)}
        print(f"tau {tau:g} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    shipped = fits["least squares (shipped)"]["hit_ratio"]
    print(f"{'fit':<26}" + "".join(f"{c:>16}" for c in shipped) + f"{'mean diff':>11}")
    for label, fit in fits.items():
        diff = [100 * (fit["hit_ratio"][c] - shipped[c]) for c in shipped]
        print(f"{label:<26}" + "".join(f"{fit['hit_ratio'][c]:>16.4f}" for c in shipped)
              + f"{np.mean(diff):>+10.2f}p")
        fit["points_over_least_squares"] = dict(zip(shipped, diff, strict=True))
    emit({"benchmark": "probe_listwise_fit", "machine": machine(),
          "inputs": {"training": TRAINING, "training_budgets": TRAINING_BUDGETS,
                     "candidates": CANDIDATES, "seed": args.seed, "requests": args.requests,
                     "evaluation_budgets": EVALUATION_BUDGETS},
          "least_squares_vs_shipped_max_abs_difference": gap,
          "fits": fits, "wall_seconds": time.perf_counter() - start}, args.out)


if __name__ == "__main__":
    main()
