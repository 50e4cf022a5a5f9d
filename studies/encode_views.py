"""A probe for docs/accuracy.md: do latents averaged over random views (``encode_views``) give the
manifold step better neighbourhoods?

    python studies/encode_views.py --data mnist5k-a --seeds 100,101,102 --views 8

Per seed it trains round 0 of the shipped defaults (the VAE on random views, N(0, I) prior), then
sends the clean images' encoder means (``encode_views=0``) or their average with those of
``--views`` random views, embeds them with UMAP (the run's settings) under ``--embeddings``
random states, and clusters each embedding with the run's GMM step (four chains, the data-axis
prior). It prints the accuracy of the reported state for each. Labels only score.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.gmm import GibbsGMM
from vaegmm.messages import PriorMessage
from vaegmm.metrics import clustering_metrics
from vaegmm.modules import VAEModule, encode_views
from vaegmm.vae import encode


def main(argv=None):
    import umap

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k-a")
    parser.add_argument("--seeds", default="100,101,102")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--embeddings", type=int, default=3, help="UMAP random states per seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    scores = {0: [], args.views: []}
    for seed in (int(s) for s in args.seeds.split(",")):
        config = TrainConfig(data=args.data, seed=seed, mutual_iterations=1)
        dataset = load_dataset(args.data, seed=seed)
        images = torch.as_tensor(dataset.flat())
        module = VAEModule(config, images.shape[1], dataset.image_shape, torch.device("cpu"))
        module.start_round(0, seed)
        module.fit(images, PriorMessage.standard_normal(len(images), config.latent_dim, "cpu"), progress=False)
        for views in scores:
            keywords = encode_views(config.replace(encode_views=views), module.augment, seed, "cpu")
            latents = encode(module.vae, images, **keywords)
            row = []
            for state in range(args.embeddings):
                embedding = umap.UMAP(n_components=config.manifold_dim, n_neighbors=config.manifold_neighbors,
                                      min_dist=config.manifold_min_dist, random_state=1000 * seed + state,
                                      n_jobs=1).fit_transform(latents)
                gmm = GibbsGMM(config.n_clusters, prior="data-axis", random_state=0).fit(embedding.astype(float))
                row.append(clustering_metrics(dataset.labels, gmm.labels_)["accuracy"])
            scores[views] += row
            print(f"seed {seed}, encode_views {views}: " + ", ".join(f"{a:.3f}" for a in row), flush=True)
    for views, values in scores.items():
        print(f"encode_views {views}: {np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} over {len(values)}")


if __name__ == "__main__":
    main()
