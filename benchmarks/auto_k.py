"""The Gibbs sweep when the GMM finds K: ``GibbsGMM("auto", max_components=30)``
against a finite ``GibbsGMM(30)`` on the same data, in the same process.

    python -m benchmarks.auto_k            # N = 10k, L = 12; prints a Markdown table

Both hold 30 clusters; "auto" adds the count of non-empty clusters per sweep and a sparse
Dirichlet prior, so its sweep should cost about the same (the issue's bound: at most 2x).
Times are per sweep, from fits of 20 and 120 sweeps (their difference over 100 sweeps), the
shortest of 3 repeats, so the start (k-means for auto, k-means++ for the finite chain) is not
counted; the start is given beside.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vaegmm.gmm import GibbsGMM

from ._timing import min_seconds


def _data(n_samples, n_features, n_clusters=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(n_clusters, n_features))
    labels = rng.integers(n_clusters, size=n_samples)
    return centres[labels] + rng.normal(size=(n_samples, n_features))


def sweep_seconds(make, X, repeats):
    """(seconds per sweep, seconds of a 20-sweep fit) of the estimator ``make(n_sweeps)``."""
    short = min_seconds(lambda: make(20).fit(X), repeats)
    long = min_seconds(lambda: make(120).fit(X), repeats)
    return max(long - short, 0.0) / 100, short


def run(n_samples=10_000, n_features=12, max_components=30, repeats=3):
    X = _data(n_samples, n_features)
    auto = sweep_seconds(lambda n: GibbsGMM("auto", max_components=max_components, n_sweeps=n, random_state=0,
                                                n_chains=1), X,
                         repeats)
    finite = sweep_seconds(lambda n: GibbsGMM(max_components, n_sweeps=n, init="kmeans++", random_state=0,
                                                  n_chains=1), X,
                           repeats)
    return {"n_samples": n_samples, "n_features": n_features, "max_components": max_components,
            "auto_sweep_ms": 1e3 * auto[0], "finite_sweep_ms": 1e3 * finite[0], "ratio": auto[0] / finite[0],
            "auto_fit20_ms": 1e3 * auto[1], "finite_fit20_ms": 1e3 * finite[1]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    row = run(args.n, repeats=args.repeats)
    print("| N | L | clusters held | auto sweep (ms) | K = 30 sweep (ms) | auto / finite | auto 20-sweep fit (ms) "
          "| finite 20-sweep fit (ms) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {row['n_samples']:,} | {row['n_features']} | {row['max_components']} | {row['auto_sweep_ms']:.2f} | "
          f"{row['finite_sweep_ms']:.2f} | {row['ratio']:.2f}× | {row['auto_fit20_ms']:.0f} | {row['finite_fit20_ms']:.0f} |")
    print(f"({time.perf_counter() - started:.0f} s)")
    return row


if __name__ == "__main__":
    main()
