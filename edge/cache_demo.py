"""``edge cache-demo``: replay a built-in adapter workload through the pager, one line per policy.

The workload is what an on-device LoRA server sees at its worst: a Zipf-popular library of
adapters with realistic sizes, interrupted by bursts of one-off requests (a batch job walking the
whole catalogue) that flush a recency-only cache. Every policy runs through the same
``PagedCache`` the daemon uses; the "bound" line is PFOO-L, an upper bound no policy can beat.
"""

from __future__ import annotations

import time

import click
import numpy as np

from edge.cache.policies import policy_class, policy_names
from edge.paging_cost import PagingCostModel
from edge.schema import approx_bytes
from edge.sim.generate import LognormalSize, scan_bursts
from edge.sim.oracle import pfoo_l_hits
from edge.sim.replay import replay_trace

ADAPTERS = 1000
# Rank-8 to rank-64 LoRAs of 1-8B models run from a few MiB to a few hundred.
ADAPTER_SIZES = LognormalSize(median_bytes=24 * 2**20, sigma=0.9, min_bytes=2**20,
                              max_bytes=512 * 2**20)


@click.command("cache-demo")
@click.option("--requests", "n_requests", default=100_000, show_default=True,
              help="Requests in the built-in trace.")
@click.option("--seed", default=0, show_default=True, help="Seed of the built-in trace.")
def cache_demo(n_requests: int, seed: int) -> None:
    """Replay a built-in adapter workload through every eviction policy."""
    if n_requests < 1000:
        raise click.BadParameter("must be at least 1000", param_hint="--requests")
    trace = scan_bursts(n_requests, ADAPTERS, alpha=0.9, seed=seed, period=10_000,
                        burst_length=1_500, sizes=ADAPTER_SIZES, rate=50.0)
    first = np.unique(trace.keys, return_index=True)[1]
    catalogue = first[trace.keys[first] < ADAPTERS]  # scans read fresh keys >= ADAPTERS
    catalogue_bytes = int(trace.sizes[catalogue].sum())
    scanned = len(first) - len(catalogue)
    profile = PagingCostModel()
    click.echo(f"workload: {len(trace):,} requests; {len(catalogue):,} adapters "
               f"({approx_bytes(catalogue_bytes)}) with Zipf 0.9 popularity, and every "
               f"10,000 requests a burst of 1,500 one-off adapters ({scanned:,} in all) "
               f"[seed {seed}]")
    click.echo(f"paging cost model: {profile.cold_latency_s * 1e6:.0f} us + "
               f"{profile.cold_bandwidth_bytes_per_s / 1e9:.1f} GB/s per load\n")
    # No router here: a policy ranking by its demand estimate would only repeat another's row.
    policies = [name for name in policy_names() if not policy_class(name).needs_router]
    for fraction in (0.05, 0.20):
        budget = int(catalogue_bytes * fraction)
        started = time.perf_counter()
        results = replay_trace(trace, policies, [budget], profile=profile)
        bound = pfoo_l_hits(trace.keys, trace.sizes, budget) / len(trace)
        lru = next(r for r in results if r.policy == "lru")
        click.echo(f"budget {approx_bytes(budget)} ({fraction:.0%} of the popular "
                   "adapters' bytes)")
        click.echo(f"  {'policy':<8} {'hit ratio':>9} {'byte hits':>9} {'paging s':>9} "
                   f"{'vs lru':>7}")
        for r in sorted(results, key=lambda r: -r.hit_ratio):
            change = (r.paging_seconds / lru.paging_seconds - 1) if lru.paging_seconds else 0.0
            click.echo(f"  {r.policy:<8} {r.hit_ratio:>9.3f} {r.byte_hit_ratio:>9.3f} "
                       f"{r.paging_seconds:>9.1f} {change:>+7.0%}")
        click.echo(f"  {'bound':<8} {bound:>9.3f}   (PFOO-L: no policy can exceed it)")
        click.echo(f"  ({time.perf_counter() - started:.1f} s for {len(policies)} policies)\n")
    click.echo("paging s: modelled seconds spent loading adapters; vs lru: change against LRU.")

