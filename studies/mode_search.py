"""A label-free search from the chain's reported partition for a more probable one: merge two
clusters and split another, then a short chain from there; keep what raises log p(z | X).

    python -m studies.mode_search --data mnist5k-a --seeds 100,101,102      # the selection set
    python -m studies.mode_search --data mnist5k --seeds 0,1,2              # benchmarks.chains' latents

(from the repository's root, which holds ``benchmarks``).

A fixed-K chain whose slots are all in use rarely leaves a partition that spends two clusters on
one class while another cluster mixes two (docs/accuracy.md): the way out passes through a state
with one cluster fewer, far less probable. This search makes that step directly. From the
partition z that ``GibbsGMM(10)`` reports (defaults, random_state 0-5), for each of the
``--merges`` pairs of clusters whose merge costs the least collapsed log posterior, and each other
cluster c: merge the pair, split c in two by k-means (2 clusters), run ``--sweeps`` Gibbs sweeps
of ``GibbsGMM(10, n_chains=1)`` from there, and score the reported partition by log p(z | X). The
best candidate replaces z if it is more probable; up to ``--rounds`` rounds. Labels only score.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.cluster import KMeans

from benchmarks.chains import round0_latents
from vaegmm.gibbs import sufficient_statistics
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import clustering_metrics
from vaegmm.split_merge import _Prior, log_marginal_likelihood
from vaegmm.threads import ONE_THREAD, limit_threads

FITS = range(6)


def merge_costs(X, labels, n_clusters, prior):
    """{(a, b): change of log p(z | X) when cluster b is merged into a}, occupied a < b."""
    counts, sums, outer = sufficient_statistics(X, labels, n_clusters)
    single = log_marginal_likelihood(counts, sums, outer, prior.beta, prior.mean, prior.scale_inv, prior.dof)
    single = single + np.array([prior.log_prior_weight(n) if n else 0.0 for n in counts])
    costs = {}
    occupied = np.flatnonzero(counts)
    for position, a in enumerate(occupied):
        for b in occupied[position + 1:]:
            union = log_marginal_likelihood(counts[[a]] + counts[[b]], sums[[a]] + sums[[b]], outer[[a]] + outer[[b]],
                                            prior.beta, prior.mean, prior.scale_inv, prior.dof)[0]
            costs[(a, b)] = union + prior.log_prior_weight(counts[a] + counts[b]) - single[a] - single[b]
    return costs


def search(X, gmm, rng, merges=3, sweeps=10, rounds=3):
    """The search from fitted ``gmm``'s reported partition; returns (labels, log p(z | X), rounds that moved)."""
    n_clusters = gmm.n_components_
    mean_prior, scale_inv, dof = gmm._resolve_prior(X)
    prior = _Prior(X.shape[1], gmm._alpha_value(), gmm.beta, mean_prior, scale_inv, dof)
    labels, score, moved = gmm.labels_.copy(), gmm.log_collapsed_posterior_, 0
    for _ in range(rounds):
        costs = merge_costs(X, labels, n_clusters, prior)
        best = None
        for a, b in sorted(costs, key=costs.get, reverse=True)[:merges]:
            merged = np.where(labels == b, a, labels)
            for c in np.flatnonzero(np.bincount(merged, minlength=n_clusters)):
                members = np.flatnonzero(merged == c)
                if c == a or len(members) < 2:
                    continue
                start = merged.copy()
                with limit_threads(ONE_THREAD):
                    halves = KMeans(2, n_init=1, random_state=int(rng.integers(2**31 - 1))).fit_predict(X[members])
                start[members[halves == 1]] = b
                chain = GibbsGMM(n_clusters, n_sweeps=sweeps, n_chains=1, random_state=rng.spawn(1)[0]).fit(
                    X, init_labels=start)
                if best is None or chain.log_collapsed_posterior_ > best[0]:
                    best = (chain.log_collapsed_posterior_, chain.labels_.copy())
        if best is None or best[0] <= score:
            break
        score, labels, moved = best[0], best[1], moved + 1
    return labels, score, moved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k-a")
    parser.add_argument("--seeds", default="100,101,102", help="comma-separated VAE seeds")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--merges", type=int, default=3)
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| latents | GibbsGMM(10): accuracy, 6 fits | each | after the search | each | log p(z | X) gained (each) "
          "| rounds that moved | s per search |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        X, y = round0_latents(args.data, args.epochs, seed)
        before, after, gained, moved, seconds = [], [], [], [], []
        for fit in FITS:
            gmm = GibbsGMM(10, random_state=fit).fit(X)
            started = time.perf_counter()
            labels, score, rounds = search(X, gmm, np.random.default_rng([fit, seed]), args.merges, args.sweeps,
                                           args.rounds)
            seconds.append(time.perf_counter() - started)
            before.append(clustering_metrics(y, gmm.labels_)["accuracy"])
            after.append(clustering_metrics(y, labels)["accuracy"])
            gained.append(score - gmm.log_collapsed_posterior_)
            moved.append(rounds)
        print(f"| {args.data} seed {seed} | {np.mean(before):.3f} ± {np.std(before, ddof=1):.3f} | "
              + ", ".join(f"{a:.3f}" for a in before)
              + f" | {np.mean(after):.3f} ± {np.std(after, ddof=1):.3f} | " + ", ".join(f"{a:.3f}" for a in after)
              + " | " + ", ".join(f"{g:.0f}" for g in gained) + " | " + ", ".join(str(m) for m in moved)
              + f" | {np.mean(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
