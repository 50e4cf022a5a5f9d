"""Which chain to keep, and how many chains? The spread of the kept state on fixed latents.

    python -m studies.chain_selection --data mnist5k-a --seeds 100,101,102     # the selection set
    python -m studies.chain_selection --data mnist5k --seeds 0,1,2             # benchmarks.chains' latents

(from the repository's root, which holds ``benchmarks``).

For each dataset and VAE seed, the latents of benchmarks.chains (a round-0 VAE of ``--epochs``
epochs, encoder means of the clean images) are clustered by ``--chains`` single chains of
``GibbsGMM(10, n_chains=1)`` (the class defaults otherwise). Each chain's reported state is scored
by four label-free criteria:

- ``joint``: the joint log posterior log p(z, pi, mu, Lambda | X) of the reported sweep (what
  ``GibbsGMM(n_chains=k)`` keeps today);
- ``collapsed``: log p(z | X) of the reported assignments, pi, mu and Lambda integrated out
  (:func:`vaegmm.split_merge.log_collapsed_posterior`);
- ``half``: the mean joint log posterior over the chain's last half;
- ``likelihood``: sum_n log p(x_n | the reported parameters).

Then, for k chains (k = 4, 8, 16), the chain with the best criterion among k drawn at random
(3,000 draws without replacement from the pool) is "kept": the table prints the kept state's
accuracy, mean and std over the draws. That std is what the spread of ``GibbsGMM(n_chains=k)``
would be if its fits drew their chains from this pool. Two rows form a partition from the k
chains instead of keeping one (300 draws): ``vote`` (each datum's most frequent label, every
chain's clusters matched to the most probable chain's) and ``medoid`` (the chain that agrees
most, by mean ARI, with the other k - 1). Labels only score.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from benchmarks.chains import round0_latents
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import clustering_metrics
from vaegmm.naming_game import adopt_names
from vaegmm.split_merge import log_collapsed_posterior

CRITERIA = ("joint", "collapsed", "half", "likelihood")


def chain_pool(latents, labels, n_chains, seed=7):
    """One record per single chain: accuracy of its reported state and each criterion."""
    records = []
    for chain_rng in np.random.default_rng(seed).spawn(n_chains):
        gmm = GibbsGMM(10, n_chains=1, random_state=chain_rng).fit(latents)
        mean_prior, scale_inv, dof = gmm._resolve_prior(latents)
        posterior = gmm.log_posterior_
        records.append({
            "accuracy": clustering_metrics(labels, gmm.labels_)["accuracy"],
            "joint": float(posterior[gmm.reported_sweep_]),
            "collapsed": log_collapsed_posterior(latents, gmm.labels_, 10, alpha=float(gmm._alpha_value()),
                                                 beta=gmm.beta, mean_prior=mean_prior, scale_inv=scale_inv,
                                                 dof=dof),
            "half": float(np.mean(posterior[len(posterior) // 2:])),
            "likelihood": float(np.sum(gmm.score_samples(latents))),
            "labels": np.asarray(gmm.labels_),
        })
    return records


def kept(records, criterion, k, draws=3000, seed=0):
    """Accuracies of the state kept by ``criterion`` among k chains drawn from the pool."""
    rng = random.Random(seed)
    return [records[max(rng.sample(range(len(records)), k), key=lambda i: records[i][criterion])]["accuracy"]
            for _ in range(draws)]


def consensus_accuracy(records, labels_true, k, how, draws=300, seed=0, n_clusters=10):
    """Accuracy of a partition formed from k chains drawn from the pool, label-free:

    - ``vote``: every chain aligned to the most probable one (joint criterion), then each datum
      takes the label most chains give it;
    - ``medoid``: the chain whose partition agrees most (mean ARI) with the other k - 1.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(draws):
        chosen = [records[i] for i in rng.sample(range(len(records)), k)]
        if how == "vote":
            best = max(chosen, key=lambda r: r["joint"])["labels"]
            votes = np.zeros((len(best), n_clusters))
            for record in chosen:
                votes[np.arange(len(best)), adopt_names(record["labels"], best, n_clusters)] += 1
            partition = votes.argmax(axis=1)
        else:
            agreement = [np.mean([adjusted_rand_score(a["labels"], b["labels"]) for b in chosen if b is not a])
                         for a in chosen]
            partition = chosen[int(np.argmax(agreement))]["labels"]
        out.append(clustering_metrics(labels_true, partition)["accuracy"])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist5k-a")
    parser.add_argument("--seeds", default="100,101,102", help="comma-separated VAE seeds")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--chains", type=int, default=24, help="single chains in each pool")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| latents | criterion | " + " | ".join(f"{k} chains: kept accuracy" for k in (4, 8, 16))
          + " | correlation with accuracy |")
    print("|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        started = time.perf_counter()
        latents, labels = round0_latents(args.data, args.epochs, seed)
        records = chain_pool(latents, labels, args.chains)
        accuracy = [r["accuracy"] for r in records]
        for criterion in CRITERIA:
            cells = []
            for k in (4, 8, 16):
                values = kept(records, criterion, k)
                cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
            correlation = np.corrcoef([r[criterion] for r in records], accuracy)[0, 1]
            print(f"| {args.data} seed {seed} | {criterion} | " + " | ".join(cells) + f" | {correlation:+.2f} |")
        for how in ("vote", "medoid"):
            cells = []
            for k in (4, 8, 16):
                values = consensus_accuracy(records, labels, k, how)
                cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
            print(f"| {args.data} seed {seed} | {how} | " + " | ".join(cells) + " | |", flush=True)
        print(f"| {args.data} seed {seed} | one chain | {np.mean(accuracy):.3f} ± {np.std(accuracy):.3f} "
              f"(range {min(accuracy):.3f}-{max(accuracy):.3f}; {time.perf_counter() - started:.0f} s) | | | |",
              flush=True)


if __name__ == "__main__":
    main()
