"""Which UMAP settings give round 0's GMM the best partition? N2D's against fewer or more
neighbours and fewer dimensions, on round 0's latents.

    python -m studies.manifold_settings --data mnist5k-a --seeds 100,101,102     # the selection set

(from the repository's root). For each VAE seed, round 0 of the shipped defaults (200 epochs on
random views, N(0, I) prior) gives the latents; each UMAP setting embeds them under
``--embeddings`` random states, and ``GibbsGMM(10, prior="data-axis")`` (the run's GMM step:
four chains, the most probable state) clusters each embedding. Printed: the accuracy of the
reported state per embedding, and per setting the mean ± std over every seed and random state,
with the seconds per embedding. Labels only score.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import clustering_metrics
from vaegmm.mutual import fit_mutual

# (n_neighbors, n_components, min_dist); the first is N2D's, the shipped default
SETTINGS = [(20, 10, 0.0), (10, 10, 0.0), (50, 10, 0.0), (100, 10, 0.0), (20, 5, 0.0), (50, 5, 0.0),
            (20, 10, 0.1)]


def main(argv=None):
    import umap

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k-a")
    parser.add_argument("--seeds", default="100,101,102", help="comma-separated VAE seeds")
    parser.add_argument("--embeddings", type=int, default=3, help="UMAP random states per seed and setting")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scores = {setting: [] for setting in SETTINGS}
    seconds = {setting: [] for setting in SETTINGS}
    for seed in (int(s) for s in args.seeds.split(",")):
        dataset = load_dataset(args.data, seed=seed)
        result = fit_mutual(dataset, TrainConfig(data=args.data, seed=seed, mutual_iterations=1), progress=False,
                            log=None)
        latents = np.asarray(result.rounds[0].latents, dtype=np.float32)
        print(f"{args.data} seed {seed}: round 0 {result.rounds[0].metrics['accuracy']:.3f}", flush=True)
        for setting in SETTINGS:
            neighbors, dim, min_dist = setting
            row = []
            for state in range(args.embeddings):
                started = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    embedding = umap.UMAP(n_components=dim, n_neighbors=neighbors, min_dist=min_dist,
                                          random_state=1000 * seed + state, n_jobs=1).fit_transform(latents)
                seconds[setting].append(time.perf_counter() - started)
                gmm = GibbsGMM(10, prior="data-axis", random_state=0).fit(embedding.astype(np.float64))
                row.append(clustering_metrics(dataset.labels, gmm.labels_)["accuracy"])
            scores[setting] += row
            print(f"    neighbours {neighbors:3d}, dim {dim:2d}, min_dist {min_dist}: "
                  + ", ".join(f"{a:.3f}" for a in row), flush=True)
    print("setting (neighbours, dim, min_dist): accuracy mean ± std over every seed and random state; "
          "mean - std; s per embedding")
    for setting in SETTINGS:
        values = np.asarray(scores[setting])
        print(f"    {setting}: {values.mean():.3f} ± {values.std(ddof=1):.3f}  {values.mean() - values.std(ddof=1):.3f}  "
              f"{np.mean(seconds[setting]):.1f} s", flush=True)


if __name__ == "__main__":
    main()
