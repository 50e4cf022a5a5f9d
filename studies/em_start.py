"""Which EM restart should a chain start from: the most likely, or the most probable partition?

    python -m studies.em_start --data mnist5k-a --seeds 100,101,102      # the selection set

(from the repository's root, which holds ``benchmarks``).

The EM start of ``GibbsGMM(init="em")`` runs ``EM_RESTARTS`` k-means-started EM fits and starts the
chain from the assignments of the most likely one. On the latents of benchmarks.chains (a round-0
VAE of ``--epochs`` epochs), this compares ``GibbsGMM(10)`` with its defaults (six fits,
random_state 0-5) against the same with every EM start replaced by the restart whose partition
has the highest collapsed log posterior log p(z | X) under the data-scaled prior
(:func:`vaegmm.split_merge.log_collapsed_posterior`). It also prints, over 120 single EM fits,
the correlation of that posterior with accuracy. Labels only score.
"""

from __future__ import annotations

import argparse
from unittest import mock

import numpy as np
import torch

from benchmarks.chains import round0_latents
from vaegmm import gmm as gmm_module
from vaegmm.gibbs import data_scaled_prior, em_labels
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import clustering_metrics
from vaegmm.split_merge import log_collapsed_posterior


def collapsed_scorer(X, n_clusters):
    """labels -> log p(z | X) under GibbsGMM's default prior (scaled to X, alpha 0.3, beta 1, nu = L)."""
    mean_prior, scale = data_scaled_prior(X, n_clusters, X.shape[1])
    scale_inv = np.linalg.inv(scale)
    return lambda labels: log_collapsed_posterior(X, labels, n_clusters, alpha=0.3, beta=1.0, mean_prior=mean_prior,
                                                  scale_inv=scale_inv, dof=X.shape[1])


def em_by_collapsed(X, n_clusters, restarts, seed):
    """em_labels' contract, but the restart kept is the most probable partition, not the most likely."""
    fits = [em_labels(X, n_clusters, 1, int(child.generate_state(1)[0] >> 1))
            for child in np.random.SeedSequence(seed).spawn(restarts)]
    return max(fits, key=collapsed_scorer(X, n_clusters))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k-a")
    parser.add_argument("--seeds", default="100,101,102", help="comma-separated VAE seeds")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| latents | EM start kept by | GibbsGMM(10): accuracy, 6 fits | per fit | corr(collapsed, accuracy), 120 EM fits |")
    print("|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        X, y = round0_latents(args.data, args.epochs, seed)
        singles = [em_labels(X, 10, 1, s) for s in range(120)]
        score = collapsed_scorer(X, 10)
        correlation = np.corrcoef([score(z) for z in singles],
                                  [clustering_metrics(y, z)["accuracy"] for z in singles])[0, 1]
        for name, start in (("likelihood (today)", em_labels), ("collapsed posterior", em_by_collapsed)):
            with mock.patch.object(gmm_module, "em_labels", start):
                accuracy = [clustering_metrics(y, GibbsGMM(10, random_state=s).fit(X).labels_)["accuracy"]
                            for s in range(6)]
            print(f"| {args.data} seed {seed} | {name} | {np.mean(accuracy):.3f} ± {np.std(accuracy, ddof=1):.3f} | "
                  + ", ".join(f"{a:.3f}" for a in accuracy) + f" | {correlation:+.2f} |", flush=True)


if __name__ == "__main__":
    main()
