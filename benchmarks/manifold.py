"""The time of a default run (``--manifold umap``), stage by stage, against ``--manifold none`` in
the same process, and of the defaults with the convolutional VAE (``--architecture conv``).

    python -m benchmarks.manifold                  # mnist5k, seed 0: --manifold none, the defaults, conv
    python -m benchmarks.manifold --max-samples 500 --epochs 2    # a smoke run

Each configuration is one ``fit_mutual`` (no run directory, no figures) of the shipped settings
(each manifold takes its own prior, schedule and VAE start). Per round: the VAE's training,
then the rest of the round (with the manifold: UMAP's embedding, the GMM's chains on it and the
message back in the latent space). The first ``--manifold umap`` round includes UMAP's one-off
JIT compilation (numba), paid once per process; a warm-up call on a few points measures it
apart. Labels only score.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.mutual import fit_mutual

from ._timing import format_table

CONFIGURATIONS = {"--manifold none": {"manifold": "none"}, "defaults (umap)": {},
                  "defaults, --architecture conv": {"architecture": "conv"}}


def umap_compilation_seconds():
    """Seconds of UMAP's first call in this process (numba compiles its kernels), on 300 points."""
    import umap

    points = np.random.default_rng(0).normal(size=(300, 12)).astype(np.float32)
    started = time.perf_counter()
    umap.UMAP(n_components=10, n_neighbors=20, min_dist=0.0, random_state=0, n_jobs=1).fit_transform(points)
    return time.perf_counter() - started


def run(data="mnist5k", seed=0, max_samples=None, epochs=None, log=print):
    dataset = load_dataset(data, seed=seed, max_samples=max_samples)
    rows, compiled = [], False
    for name, changes in CONFIGURATIONS.items():
        settings = dict(changes)
        if epochs is not None:
            settings.update(vae_epochs=epochs, round0_epochs=epochs, gmm_sweeps=10)
        compilation = None  # (UMAP's first call in the process compiles; later ones do not)
        if changes.get("manifold") != "none" and not compiled:
            compilation, compiled = umap_compilation_seconds(), True
        config = TrainConfig(data=data, seed=seed, **settings)
        started = time.perf_counter()
        result = fit_mutual(dataset, config, progress=False, log=None)
        seconds = time.perf_counter() - started
        row = {"configuration": name, "seconds": seconds, "compilation": compilation,
               "accuracy": result.rounds[-1].metrics["accuracy"]}
        for round_ in result.rounds:
            metrics = round_.metrics
            row[f"vae_{round_.iteration}"] = metrics["vae_seconds"]
            row[f"gmm_{round_.iteration}"] = metrics["seconds"] - metrics["vae_seconds"]
        rows.append(row)
        if log is not None:
            log(f"  {name}: {seconds:.1f} s, accuracy {row['accuracy']:.4f}")
    for row in rows:
        row["ratio"] = row["seconds"] / rows[0]["seconds"]
    return rows


def columns(rounds):
    stages = []
    for r in range(rounds):
        stages += [(f"vae_{r}", f"round {r}: VAE (s)", "{:.1f}"),
                   (f"gmm_{r}", f"round {r}: (UMAP +) GMM (s)", "{:.1f}")]
    return ([("configuration", "configuration", None)] + stages
            + [("seconds", "run (s)", "{:.1f}"), ("ratio", "/ manifold none", "{:.2f}×"),
               ("compilation", "UMAP's JIT, once per process (s)", "{:.1f}"),
               ("accuracy", "final accuracy", "{:.4f}")])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.manifold", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="VAE epochs of every round (default: the shipped)")
    args = parser.parse_args(argv)
    rows = run(args.data, args.seed, args.max_samples, args.epochs)
    rounds = sum(key.startswith("vae_") for key in rows[0])
    print(format_table(rows, columns(rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
