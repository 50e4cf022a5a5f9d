"""Gibbs sweep benchmark: vaegmm's sampler vs scikit-learn and vs the reference-style sampler.

For each (N, K, L) the same synthetic latents (a K-component mixture, scaled like VAE latents)
go to

- ``GibbsGMM.fit``: the time of one sweep (median over every sweep of several fits, from the
  callback's timestamps), the fit's one-off setup (initialisation, the monomials of the data),
  and the peak traced memory of a fit;
- ``sklearn.mixture.BayesianGaussianMixture`` (full covariance, finite Dirichlet weights):
  time per variational iteration, (t(fit with a iterations) - t(fit with b)) / (a - b), medians;
- :func:`benchmarks.reference_gibbs.reference_sweep`, where its N x N matrix fits in memory.
"""

from __future__ import annotations

import os
import statistics
import time
import warnings

import numpy as np

from vaegmm.gmm import GibbsGMM

# One chain started from a prior draw: the sweep's own cost (the defaults add an EM start and
# run four chains, each with this sweep).
ONE_CHAIN = {"n_chains": 1, "init": "prior"}

from ._timing import min_seconds, peak_traced_bytes
from .reference_gibbs import reference_sweep

FULL_CASES = [(1_000, 10, 12), (10_000, 10, 12), (60_000, 10, 12), (200_000, 10, 12), (60_000, 50, 32)]
QUICK_CASES = [(1_000, 10, 12), (10_000, 10, 12)]


def make_latents(n_samples, n_components, n_features, seed=0):
    """Synthetic latents: a mixture of K Gaussians with random covariances, overall scale ~1-3.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64
    labels : ndarray of shape (n_samples,)
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_components, n_features))
    mixing = rng.normal(scale=0.4, size=(n_components, n_features, n_features)) + 0.5 * np.eye(n_features)
    labels = rng.integers(n_components, size=n_samples)
    noise = rng.standard_normal((n_samples, n_features))
    X = centres[labels] + np.einsum("nl,nml->nm", noise, mixing[labels])
    return X, labels


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 * 2**30


def time_sweeps(X, n_components, *, sweeps, repeats, **params):
    """Median seconds per sweep and median one-off setup seconds of ``GibbsGMM.fit``."""
    per_sweep, setup = [], []
    for repeat in range(repeats):
        stamps = []
        model = GibbsGMM(n_components, n_sweeps=sweeps, random_state=repeat, **{**ONE_CHAIN, **params},
                         callback=lambda sweep, labels, model: stamps.append(time.perf_counter()))
        started = time.perf_counter()
        model.fit(X)
        gaps = np.diff(stamps)
        per_sweep.extend(gaps)
        # Everything before the first sweep ended, less one sweep: initialisation and set-up.
        setup.append(stamps[0] - started - float(np.median(gaps)))
    return float(np.median(per_sweep)), float(np.median(setup))


def time_sklearn_iteration(X, n_components, *, repeats, iterations=(1, 11)):
    """Seconds per iteration of BayesianGaussianMixture (full covariance): the difference of the
    shortest fits of 11 and 1 iterations, over 10 (on a busy machine, where that difference can
    vanish for small N, the shortest fit of 11 over 11, set-up included)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    def fit(max_iter):
        model = BayesianGaussianMixture(
            n_components=n_components, covariance_type="full", max_iter=max_iter, tol=0.0, n_init=1,
            init_params="random_from_data", weight_concentration_prior_type="dirichlet_distribution",
            weight_concentration_prior=0.3, random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X)

    low, high = iterations
    t_low = min_seconds(lambda: fit(low), repeats)
    t_high = min_seconds(lambda: fit(high), repeats)
    if t_high > t_low:
        return (t_high - t_low) / (high - low)
    return t_high / high


def time_reference_sweep(X, n_components, *, repeats, seed=0):
    """Median seconds of one reference-style sweep, from a state reached by one vaegmm sweep."""
    start = GibbsGMM(n_components, n_sweeps=1, random_state=seed, **ONE_CHAIN).fit(X)
    rng = np.random.default_rng(seed)
    state = [start.means_, start.precisions_, start.weights_]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        _, *state = reference_sweep(X, *state, rng)
        times.append(time.perf_counter() - started)
        state[2] = np.maximum(state[2], 1e-300)  # keep log(weight) finite for an emptied cluster
    return statistics.median(times)


def run(cases=None, *, quick=False, repeats=None, reference_max_n=None, sklearn=True, torch_device=None,
        log=print):
    """Benchmark every (N, K, L) case; returns a list of result dicts (one per case)."""
    cases = cases or (QUICK_CASES if quick else FULL_CASES)
    repeats = repeats or (3 if quick else 5)
    if reference_max_n is None:
        reference_max_n = 1_000 if quick else 10_000
    results = []
    for n_samples, n_components, n_features in cases:
        X, _ = make_latents(n_samples, n_components, n_features)
        row = {"n_samples": n_samples, "n_components": n_components, "n_features": n_features}
        sweeps = 10 if quick else 20
        row["sweep_ms"], setup = time_sweeps(X, n_components, sweeps=sweeps, repeats=repeats)
        row["sweep_ms"] *= 1e3
        row["setup_ms"] = setup * 1e3
        row["peak_mib"] = peak_traced_bytes(lambda: GibbsGMM(n_components, n_sweeps=3, random_state=0, **ONE_CHAIN).fit(X)) / 2**20
        if torch_device is not None:
            row["torch_ms"] = time_sweeps(X, n_components, sweeps=sweeps, repeats=repeats, device=torch_device)[0] * 1e3
            row["torch_device"] = str(torch_device)
        if sklearn:
            row["sklearn_ms"] = time_sklearn_iteration(X, n_components, repeats=3 if quick else repeats) * 1e3
            row["sklearn_ratio"] = row["sklearn_ms"] / row["sweep_ms"]
        # The reference's N x N float64 matrices (two alive at once) must fit in a quarter of RAM.
        if n_samples <= reference_max_n and 2 * 8 * n_samples**2 < _memory_bytes() / 4:
            row["reference_ms"] = time_reference_sweep(X, n_components, repeats=3) * 1e3
            row["reference_ratio"] = row["reference_ms"] / row["sweep_ms"]
        results.append(row)
        if log is not None:
            log(f"  gibbs N={n_samples} K={n_components} L={n_features}: "
                + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k.endswith(("_ms", "_mib", "_ratio"))))
    return results


def columns(rows):
    """The table's columns, leaving out those no row has."""
    return [column for column in COLUMNS if any(row.get(column[0]) is not None for row in rows)]


COLUMNS = [
    ("n_samples", "N", "{:,}"),
    ("n_components", "K", None),
    ("n_features", "L", None),
    ("sweep_ms", "vaegmm sweep (ms)", "{:.2f}"),
    ("setup_ms", "fit set-up (ms)", "{:.1f}"),
    ("torch_ms", "torch backend sweep (ms)", "{:.2f}"),
    ("torch_device", "torch device", None),
    ("peak_mib", "peak memory of a fit (MiB)", "{:.0f}"),
    ("sklearn_ms", "sklearn BGM iteration (ms)", "{:.1f}"),
    ("sklearn_ratio", "sklearn / vaegmm", "{:.1f}×"),
    ("reference_ms", "reference-style sweep (ms)", "{:,.0f}"),
    ("reference_ratio", "reference / vaegmm", "{:,.0f}×"),
]
