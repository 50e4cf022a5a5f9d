"""Does a better search fix round 0's GMM on the UMAP embedding? Split-merge moves and more chains.

    python -m studies.embedding_moves --data mnist5k-a --seeds 100,101,102     # the selection set

(from the repository's root). For each VAE seed, round 0 of the shipped defaults (200 epochs,
UMAP) gives the embedding its GMM clusters; ``GibbsGMM(10, prior="data-axis")`` then clusters it
again, three fits (random_state 0-2) per setting: the class defaults (four chains), one or five
split-merge moves per sweep, and sixteen chains. Printed: the run's round-0 accuracy, EM's
read-out (10 restarts) and each setting's accuracy, mean ± std over its fits. Labels only score.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.gibbs import em_labels
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import clustering_metrics
from vaegmm.mutual import fit_mutual

SETTINGS = {"defaults (4 chains)": {}, "split-merge 1": {"split_merge": 1}, "split-merge 5": {"split_merge": 5},
            "16 chains": {"n_chains": 16}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k-a")
    parser.add_argument("--seeds", default="100,101,102", help="comma-separated VAE seeds")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for seed in (int(s) for s in args.seeds.split(",")):
        dataset = load_dataset(args.data, seed=seed)
        started = time.perf_counter()
        result = fit_mutual(dataset, TrainConfig(data=args.data, seed=seed, mutual_iterations=1), progress=False,
                            log=None)
        embedding = result.rounds[0].embedding

        def accuracy(assignments):
            return clustering_metrics(dataset.labels, assignments)["accuracy"]

        print(f"{args.data} seed {seed}: round 0 {result.rounds[0].metrics['accuracy']:.3f} "
              f"({time.perf_counter() - started:.0f} s); EM read-out {accuracy(em_labels(embedding, 10, 10, 0)):.3f}",
              flush=True)
        for name, options in SETTINGS.items():
            started = time.perf_counter()
            values = [accuracy(GibbsGMM(10, prior="data-axis", random_state=r, **options).fit(embedding).labels_)
                      for r in range(3)]
            print(f"    {name:20s} {np.mean(values):.3f} ± {np.std(values):.3f}  "
                  f"({(time.perf_counter() - started) / 3:.1f} s per fit)", flush=True)


if __name__ == "__main__":
    main()
