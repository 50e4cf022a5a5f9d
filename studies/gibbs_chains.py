"""The Gibbs step on fixed latents: how far is the reported partition from a good mode, and how
much does it vary from chain to chain?

    python studies/gibbs_chains.py --data mnist5k-a --seeds 100-102            # the selection set
    python studies/gibbs_chains.py --data mnist5k-b,digits --seeds 0-2          # confirmation

For each dataset and seed, the latents of a round-0 VAE with the shipped defaults (encoder means
of the clean images; cached under --cache) are clustered by six chains (chain seeds 0-5) of every
variant of the GMM step below, and by EM with 10 restarts (the read-out, seed 0). Each row
prints the mean and std of the six chains' accuracy and the read-out's. Labels only score.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.evaluate import readout_metrics
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import clustering_metrics
from vaegmm.mutual import fit_mutual

CHAINS = 6
# name: GibbsGMM keywords (n_components and random_state are added)
VARIANTS = {
    "fixed-em-last": {"prior": "fixed", "init": "em", "report": "last"},
    "data-em-last": {"prior": "data", "init": "em", "report": "last"},
    "data-em-map": {"prior": "data", "init": "em", "report": "map"},
    "data-prior-map": {"prior": "data", "init": "prior", "report": "map"},
    "data-kmeans-map": {"prior": "data", "init": "kmeans++", "report": "map"},
    "data-em-map-4chains": {"prior": "data", "init": "em", "report": "map", "n_chains": 4},
    "data-em-map-8chains": {"prior": "data", "init": "em", "report": "map", "n_chains": 8},
    "data-kmeans-map-8chains": {"prior": "data", "init": "kmeans++", "report": "map", "n_chains": 8},
    "data-em-map-sm10": {"prior": "data", "init": "em", "report": "map", "split_merge": 10},
    "data-kmeans-map-sm10": {"prior": "data", "init": "kmeans++", "report": "map", "split_merge": 10},
}


def parse_seeds(text):
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def latents_of(data, seed, cache):
    """Round-0 latents of the shipped defaults on ``data`` with ``seed`` (cached), and labels."""
    path = Path(cache) / f"{data}-seed{seed}.npz"
    if path.exists():
        with np.load(path) as saved:
            return saved["latents"], saved["labels"]
    config = TrainConfig(data=data, seed=seed, mutual_iterations=1, gmm_sweeps=1)
    dataset = load_dataset(config.data, seed=seed)
    result = fit_mutual(dataset, config, progress=False, log=None)
    latents = np.asarray(result.rounds[0].latents, dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, latents=latents, labels=dataset.labels)
    return latents, dataset.labels


def score_variant(latents, labels, keywords, n_clusters=10, sweeps=100):
    accuracies, seconds = [], []
    for chain in range(CHAINS):
        started = time.perf_counter()
        gmm = GibbsGMM(n_clusters, n_sweeps=sweeps, random_state=chain, **keywords).fit(latents)
        seconds.append(time.perf_counter() - started)
        accuracies.append(clustering_metrics(labels, gmm.labels_)["accuracy"])
    return accuracies, statistics.mean(seconds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k-a", help="comma-separated datasets")
    parser.add_argument("--seeds", default="100-102")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--cache", default="runs/study-latents")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| data | seed | variant | chains: accuracy mean ± std | min | EM read-out | s per chain |")
    print("|---|---|---|---|---|---|---|")
    for data in args.data.split(","):
        for seed in parse_seeds(args.seeds):
            latents, labels = latents_of(data, seed, args.cache)
            readout = readout_metrics(latents, labels, 10, seed=0)["accuracy"]
            for name in args.variants.split(","):
                accuracies, seconds = score_variant(latents, labels, VARIANTS[name])
                print(f"| {data} | {seed} | {name} | {statistics.mean(accuracies):.3f} ± "
                      f"{statistics.stdev(accuracies):.3f} | {min(accuracies):.3f} | {readout:.3f} | {seconds:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
