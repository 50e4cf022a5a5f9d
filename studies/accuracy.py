"""The accuracy study behind docs/accuracy.md: named variants of a base config (BASE), each
trained with several seeds on the embedded data, scored against the labels.

Labels only score; they never pick a seed, a sweep or a per-run setting. A variant is ranked
by the mean minus the standard deviation (over seeds) of its last round's accuracy.

    python studies/accuracy.py run base batch64 kl2 --seeds 0-4          # append results
    python studies/accuracy.py run base --apart                          # also the apart baseline
    python studies/accuracy.py table --sort --seeds 0-4                  # markdown table

Results are appended, one JSON line per (variant, seed, baseline), to studies/results.jsonl;
a (variant, seed) already there is skipped, so an interrupted study continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.jsonl"

# The study's base: the package defaults as they were before this study, i.e. the reference's
# configuration with batch size 256 and the prior taken from the chain's last sweep. (The study
# then made prior_from="responsibilities" the default: variant "prior-resp".)
BASE = {"prior_from": "last", "vae_epochs": 100, "round0_epochs": 100, "gmm_init": "prior", "augment_rotation": 0.0,
        "augment_shift": 0.0, "augment_scale": 0.0, "augment_target": "view", "manifold": "none"}  # explicit: the defaults changed since

# Each variant: overrides of BASE.
VARIANTS = {
    "base": {},
    # optimisation
    "batch64": {"batch_size": 64},
    "batch128": {"batch_size": 128},
    "epochs50": {"vae_epochs": 50},
    "epochs200": {"vae_epochs": 200},
    # KL weight
    "kl0.5": {"kl_weight": 0.5},
    "kl2": {"kl_weight": 2.0},
    "kl4": {"kl_weight": 4.0},
    # rounds and message options
    "rounds3": {"mutual_iterations": 3},
    "rounds4": {"mutual_iterations": 4},
    "warm": {"vae_init": "warm"},
    "sample": {"send": "sample"},
    "full": {"prior_covariance": "full"},
    "sweeps30": {"gmm_sweeps": 30},
    "sweeps300": {"gmm_sweeps": 300},
    "kmeans++": {"gmm_init": "kmeans++"},
    # GMM hyperparameters
    "alpha1": {"alpha": 1.0},
    "alpha10": {"alpha": 10.0},
    "W0.1": {"wishart_scale": 0.1},
    "W2": {"wishart_scale": 2.0},
    "nu20": {"wishart_dof": 20.0},
    # how the prior is formed from the chain, and where each round's chain starts
    "prior-average": {"prior_from": "average"},
    "prior-resp": {"prior_from": "responsibilities"},
    "chain-previous": {"chain_init": "previous"},
    "chains5": {"gmm_chains": 5, "gmm_init": "kmeans++"},
    # combinations
    "kl2-resp": {"kl_weight": 2.0, "prior_from": "responsibilities"},
    "kl2-prev-r3": {"kl_weight": 2.0, "chain_init": "previous", "mutual_iterations": 3},
    "kl2-resp-prev-r3": {"kl_weight": 2.0, "prior_from": "responsibilities", "chain_init": "previous",
                         "mutual_iterations": 3},
    # on top of kl_weight=2: rounds, epochs, sweeps, batch size, GMM hyperparameters, latent size
    "kl2-r3": {"kl_weight": 2.0, "mutual_iterations": 3},
    "kl2-e50": {"kl_weight": 2.0, "vae_epochs": 50},
    "kl2-sweeps300": {"kl_weight": 2.0, "gmm_sweeps": 300},
    "kl2-batch64": {"kl_weight": 2.0, "batch_size": 64},
    "kl2-alpha10": {"kl_weight": 2.0, "alpha": 10.0},
    "kl2-W2": {"kl_weight": 2.0, "wishart_scale": 2.0},
    "kl2-nu50": {"kl_weight": 2.0, "wishart_dof": 50.0, "wishart_scale": 0.132},  # same E[Lambda] = nu W
    "kl2-latent10": {"kl_weight": 2.0, "latent_dim": 10},
    # VAE shape
    "conv": {"architecture": "conv", "prior_from": "responsibilities"},
    "conv-kl2-e50": {"architecture": "conv", "kl_weight": 2.0, "vae_epochs": 50},
    "latent10": {"latent_dim": 10},
    "latent16": {"latent_dim": 16},
    "hidden512-256": {"hidden_dims": [512, 256]},
}


def parse_seeds(text):
    if "-" in text:
        first, last = text.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in text.split(",")]


def parse_variant(name, variants=VARIANTS):
    """A named variant of ``variants``, or inline overrides ``name:key=value,key=value`` (values as JSON)."""
    if ":" in name:
        label, _, body = name.partition(":")
        overrides = {}
        for item in body.split(","):
            key, _, value = item.partition("=")
            try:
                overrides[key] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key] = value
        return label, overrides
    if name not in variants:
        raise SystemExit(f"Unknown variant {name!r}; known: {', '.join(variants)} (or label:key=value,...).")
    return name, variants[name]


def run_one(variant, overrides, seed, baseline, threads):
    """Train one seed of a variant: 'mutual' (all rounds) or 'apart' (one long round)."""
    import torch

    from vaegmm.config import TrainConfig
    from vaegmm.data import load_dataset
    from vaegmm.evaluate import apart_config
    from vaegmm.mutual import fit_mutual

    torch.set_num_threads(threads)
    config = TrainConfig().replace(**{**BASE, **overrides}, seed=seed)
    if baseline == "apart":
        config = apart_config(config)
    dataset = load_dataset(config.data, max_samples=config.max_samples, seed=config.seed)
    started = time.perf_counter()
    result = fit_mutual(dataset, config, progress=False, log=None)
    seconds = time.perf_counter() - started
    rounds = [{k: r.metrics[k] for k in ("accuracy", "ari", "nmi", "elbo")} for r in result.rounds]
    return {"variant": variant, "overrides": overrides, "seed": seed, "baseline": baseline,
            "rounds": rounds, "seconds": seconds}


def load_results():
    if not RESULTS.exists():
        return []
    return [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]


def command_run(args):
    done = {(r["variant"], r["seed"], r["baseline"]) for r in load_results()}
    jobs = []
    for name in args.variants:
        variant, overrides = parse_variant(name)
        for seed in parse_seeds(args.seeds):
            for baseline in ("mutual", "apart") if args.apart else ("mutual",):
                if (variant, seed, baseline) not in done:
                    jobs.append((variant, overrides, seed, baseline))
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"{len(jobs)} runs, {args.jobs} at a time, {threads} thread(s) each", flush=True)
    if args.jobs == 1:
        _record(run_one(*job, threads) for job in jobs)
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_one, *job, threads) for job in jobs]
            _record(future.result() for future in futures)


def _record(rows):
    """Append each finished run to RESULTS and print its line."""
    for row in rows:
        with RESULTS.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        last = row["rounds"][-1]
        print(f"{row['variant']:<16} seed {row['seed']} {row['baseline']:<6} "
              + " ".join(f"r{i} {r['accuracy']:.3f}" for i, r in enumerate(row["rounds"]))
              + f"  ari {last['ari']:.3f} nmi {last['nmi']:.3f}  {row['seconds']:.0f} s", flush=True)


def _stats(values):
    """(mean, sample std) over seeds, as vaegmm evaluate computes them."""
    from vaegmm.evaluate import mean_std

    stats = mean_std(values)
    return stats["mean"], stats["std"]


def command_table(args):
    rows = load_results()
    if args.seeds:
        seeds = set(parse_seeds(args.seeds))
        rows = [r for r in rows if r["seed"] in seeds]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines = ["| variant | overrides | seeds | round 0 acc | apart acc | mutual acc | mutual ARI | mutual NMI "
             "| mean − std | s / run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    table = []
    for variant in variants:
        mutual = [r for r in rows if r["variant"] == variant and r["baseline"] == "mutual"]
        apart = [r for r in rows if r["variant"] == variant and r["baseline"] == "apart"]
        if not mutual:
            continue
        cell = {}
        for metric in ("accuracy", "ari", "nmi"):
            cell[metric] = _stats([r["rounds"][-1][metric] for r in mutual])
        round0 = _stats([r["rounds"][0]["accuracy"] for r in mutual])
        apart_acc = _stats([r["rounds"][-1]["accuracy"] for r in apart]) if apart else None
        seconds = np.mean([r["seconds"] for r in mutual])
        score = cell["accuracy"][0] - cell["accuracy"][1]
        overrides = ", ".join(f"{k}={v}" for k, v in mutual[0]["overrides"].items()) or "(base)"
        fmt = lambda s: f"{s[0]:.3f} ± {s[1]:.3f}"  # noqa: E731
        table.append((score, f"| {variant} | {overrides} | {len(mutual)} | {fmt(round0)} | "
                      f"{fmt(apart_acc) if apart_acc else '–'} | {fmt(cell['accuracy'])} | {fmt(cell['ari'])} | "
                      f"{fmt(cell['nmi'])} | {score:.3f} | {seconds:.0f} |"))
    if args.sort:
        table.sort(key=lambda item: -item[0])
    print("\n".join(lines + [line for _, line in table]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train variants over seeds, appending to results.jsonl")
    run.add_argument("variants", nargs="+")
    run.add_argument("--seeds", default="0-4")
    run.add_argument("--jobs", type=int, default=2)
    run.add_argument("--apart", action="store_true", help="also train the apart baseline")
    table = sub.add_parser("table", help="print the results as a markdown table")
    table.add_argument("--sort", action="store_true", help="rank by mean − std of the last round's accuracy")
    table.add_argument("--seeds", help="only these seeds, e.g. 0-4 or 5,6,7 (default: all)")
    args = parser.parse_args(argv)
    {"run": command_run, "table": command_table}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
