"""A probe for docs/accuracy.md: does a manifold step
between the VAE's latents and the mixture (N2D: UMAP, then a Gaussian mixture) raise the level,
for the latents of round 0, the apart baseline and the last round of the shipped defaults?

    pip install umap-learn    # not a dependency of vaegmm
    python studies/umap_probe.py --data mnist5k-a --seeds 100-102

Per seed it trains the defaults' mutual run and apart baseline (one thread each), then scores
each set of latents three ways: the final Gibbs sweep, the EM read-out, and UMAP (10
dimensions, 20 neighbours, min_dist 0) followed by the EM read-out. Labels only score.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from accuracy import parse_seeds  # studies/ is on the path when run as a script

from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.evaluate import apart_config, readout_metrics
from vaegmm.mutual import fit_mutual


def score_seed(data, seed):
    import umap  # imported here: the rest of the package never needs it

    config = TrainConfig(data=data, seed=seed)
    dataset = load_dataset(config.data, seed=seed)
    mutual = fit_mutual(dataset, config, progress=False, log=None)
    apart = fit_mutual(dataset, apart_config(config), progress=False, log=None)
    scores = {}
    for name, result in (("round 0", mutual.rounds[0]), ("apart", apart.rounds[0]), ("mutual", mutual.rounds[-1])):
        latents = np.asarray(result.latents, dtype=np.float64)
        embedded = umap.UMAP(n_components=10, n_neighbors=20, min_dist=0.0, random_state=seed).fit_transform(latents)
        scores[name] = (result.metrics["accuracy"],
                        readout_metrics(latents, dataset.labels, config.n_clusters, seed)["accuracy"],
                        readout_metrics(embedded.astype(np.float64), dataset.labels, config.n_clusters, seed)["accuracy"])
        print(f"seed {seed} {name:<8} final sweep {scores[name][0]:.3f}  EM {scores[name][1]:.3f}  "
              f"UMAP + EM {scores[name][2]:.3f}", flush=True)
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k-a")
    parser.add_argument("--seeds", default="100-102")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = [score_seed(args.data, seed) for seed in parse_seeds(args.seeds)]
    print("| latents | final sweep | EM read-out | UMAP, then EM |\n|---|---|---|---|")
    for name in runs[0]:
        cells = []
        for column in range(3):
            values = [run[name][column] for run in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
