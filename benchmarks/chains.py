"""Chain-to-chain spread of the Gibbs step on fixed latents of MNIST digits.

    python -m benchmarks.chains                 # mnist5k, round 0 of 30 epochs, seed 0
    python -m benchmarks.chains --data mnist5k-b --epochs 100 --seeds 0,1

The latents of a round-0 VAE (the shipped settings, ``--epochs`` epochs, encoder means of the
clean images) are clustered by six chains (random_state 0-5) of

- ``GibbsGMM(10)``: the class defaults (EM start, prior scaled to the data, the most probable
  state reported, four chains of which the most probable is kept);
- ``GibbsGMM(10, n_chains=8, keep="collapsed")``: eight chains, the one whose assignments have the
  highest collapsed log posterior kept (the candidate chosen on the selection set's latents,
  ``python -m studies.chain_selection``);
- ``GibbsGMM(10, n_chains=1)``: the same with one chain;
- ``GibbsGMM(10, prior="fixed", init="prior", report="last")``: the reference's sampler (its W =
  0.55 I, a start drawn from the prior, the last sweep's draw);
- EM, the most likely of 10 k-means-started fits (scikit-learn), random_state 0-5: the read-out.

Each row prints the accuracy's mean, std (over the six) and min, the gap of the mean to EM's, and
the seconds per fit. Labels only score. The targets: std <= 0.01 and a mean at most 1.5 points
below EM's, for the class defaults.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.gibbs import em_labels
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import clustering_metrics
from vaegmm.mutual import fit_mutual

from ._timing import format_table

CHAINS = range(6)
SAMPLERS = {
    "GibbsGMM(10) (defaults: 4 chains)": {},
    "GibbsGMM(10, n_chains=8, keep=\"collapsed\")": {"n_chains": 8, "keep": "collapsed"},
    "GibbsGMM(10, n_chains=1)": {"n_chains": 1},
    "reference sampler (fixed W, prior start, last draw)": {"prior": "fixed", "init": "prior", "report": "last",
                                                            "n_chains": 1},
}


def round0_latents(data, epochs, seed):
    """Latents of a round-0 VAE with the shipped settings, and the labels."""
    dataset = load_dataset(data, seed=seed)
    config = TrainConfig(data=data, seed=seed, mutual_iterations=1, round0_epochs=epochs, gmm_sweeps=1)
    result = fit_mutual(dataset, config, progress=False, log=None)
    return np.asarray(result.rounds[0].latents, dtype=np.float64), dataset.labels


def _row(name, seed, accuracies, seconds, em_mean):
    mean = statistics.mean(accuracies)
    return {"sampler": name, "seed": seed, "mean": mean, "std": statistics.stdev(accuracies),
            "min": min(accuracies), "gap": 100 * (mean - em_mean), "seconds": seconds}


def run(data="mnist5k", epochs=30, seeds=(0,), n_clusters=10):
    rows = []
    for seed in seeds:
        latents, labels = round0_latents(data, epochs, seed)
        started = time.perf_counter()
        em = [clustering_metrics(labels, em_labels(latents, n_clusters, 10, chain))["accuracy"] for chain in CHAINS]
        em_seconds = (time.perf_counter() - started) / len(CHAINS)
        em_mean = statistics.mean(em)
        for name, keywords in SAMPLERS.items():
            accuracies, started = [], time.perf_counter()
            for chain in CHAINS:
                gmm = GibbsGMM(n_clusters, random_state=chain, **keywords).fit(latents)
                accuracies.append(clustering_metrics(labels, gmm.labels_)["accuracy"])
            rows.append(_row(name, seed, accuracies, (time.perf_counter() - started) / len(CHAINS), em_mean))
        rows.append(_row("EM, 10 restarts (read-out)", seed, em, em_seconds, em_mean))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0", help="comma-separated VAE seeds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = run(args.data, args.epochs, [int(s) for s in args.seeds.split(",")])
    print(format_table(rows, [("sampler", "sampler", None), ("seed", "VAE seed", None),
                              ("mean", "accuracy mean", "{:.3f}"), ("std", "std (6 chains)", "{:.3f}"),
                              ("min", "min", "{:.3f}"), ("gap", "mean − EM's (points)", "{:+.1f}"),
                              ("seconds", "s per fit", "{:.2f}")]))
    return 0


if __name__ == "__main__":
    main()
