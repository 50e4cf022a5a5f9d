"""The EM start of ``GibbsGMM`` beside a busy process, against the same call on a quiet machine.

    python -m benchmarks.threads           # N = 5,000, L = 12, K = 10; prints a Markdown table

Researchers run several seeds side by side, so a start must not stall when the other cores
are busy. The busy process is what such a neighbour does: a torch matrix-product loop on
``--busy-threads`` threads (default: every core), started before and killed after the timings.
Two calls are timed, each the median of ``--repeats`` in the same process:

- ``GibbsGMM(10, init="em", n_sweeps=1, n_chains=1).fit(X)``: one chain's start, whose EM runs inside
  :mod:`vaegmm.threads`' limit on one thread;
- the same EM (scikit-learn's ``GaussianMixture``, 10 k-means-started restarts) with no
  thread limit: what the start did before the limit, and what any unguarded call does.

The ratio busy / quiet of the first is the figure to watch (at most 2x).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from vaegmm.gibbs import EM_RESTARTS
from vaegmm.gmm import GibbsGMM

from ._timing import format_table, median_seconds

_BUSY = "import torch\ntorch.set_num_threads({threads})\na = torch.randn(800, 800)\nwhile True:\n    a @ a\n"


def _latents(n_samples, n_features, n_clusters=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(n_clusters, n_features))
    return centres[rng.integers(n_clusters, size=n_samples)] + rng.normal(size=(n_samples, n_features))


def _unguarded_em(X, n_clusters):
    from sklearn.mixture import GaussianMixture

    reg_covar = 1e-6 * float(np.mean(np.var(X, axis=0)))
    return GaussianMixture(n_clusters, covariance_type="full", n_init=EM_RESTARTS, random_state=0,
                           reg_covar=reg_covar).fit(X).predict(X)


def _time_both(X, n_clusters, repeats):
    start = median_seconds(lambda: GibbsGMM(n_clusters, init="em", n_sweeps=1, n_chains=1, random_state=0).fit(X),
                           repeats)
    unguarded = median_seconds(lambda: _unguarded_em(X, n_clusters), repeats)
    return start, unguarded


def run(n_samples=5_000, n_features=12, n_clusters=10, repeats=3, busy_threads=None):
    """Rows of the table: the quiet and busy timings of both calls, and their ratios."""
    X = _latents(n_samples, n_features, n_clusters)
    _time_both(X, n_clusters, 1)  # imports and first-call costs outside the timings
    quiet = _time_both(X, n_clusters, repeats)
    threads = busy_threads or os.cpu_count() or 1
    neighbour = subprocess.Popen([sys.executable, "-c", _BUSY.format(threads=threads)])
    try:
        time.sleep(2.0)  # let it load torch and start computing
        busy = _time_both(X, n_clusters, repeats)
    finally:
        neighbour.kill()
        neighbour.wait()
    names = ("GibbsGMM EM start (thread limit)", "EM without a thread limit")
    return [{"call": name, "n_samples": n_samples, "n_features": n_features, "quiet_s": q, "busy_s": b,
             "ratio": b / q, "busy_threads": threads}
            for name, q, b in zip(names, quiet, busy)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy-threads", type=int, default=None, help="threads of the busy process (default: all cores)")
    args = parser.parse_args(argv)
    rows = run(args.n, repeats=args.repeats, busy_threads=args.busy_threads)
    print(format_table(rows, [("call", "call", None), ("n_samples", "N", "{:,}"), ("n_features", "L", None),
                              ("quiet_s", "quiet (s)", "{:.3f}"), ("busy_s", "beside a busy process (s)", "{:.3f}"),
                              ("ratio", "busy / quiet", "{:.2f}x"), ("busy_threads", "busy process threads", None)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
