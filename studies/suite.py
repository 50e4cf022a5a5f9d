"""The suite study (docs/accuracy.md): named variants of the configuration, each
scored like `vaegmm evaluate` (round 0, apart, mutual; final Gibbs sweep and EM read-out) on
one dataset of the suite over several seeds.

Variants were **chosen** on ``mnist5k-a`` (the even half of mnist5k) with seeds 100-102 only;
the other datasets (mnist5k-b, mnist5k-imbalanced, digits) and seeds 0-4 **confirm**.
Labels only score.

    python studies/suite.py run base views views-clean --data mnist5k-a --seeds 100-102
    python studies/suite.py table --data mnist5k-a --seeds 100-102

One JSON line per (variant, data, seed) is appended to studies/suite_results.jsonl; a
(variant, data, seed) already there is skipped, so an interrupted study continues.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from accuracy import parse_seeds  # noqa: F401  (studies/ is on the path when run as a script)
from accuracy import parse_variant as _parse_variant

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "suite_results.jsonl"

# The study's base: the package defaults before this study (prior_from="responsibilities",
# everything else the reference's), explicit so that the variants reproduce whatever the defaults.
BASE = {"prior_from": "responsibilities", "vae_init": "retrain", "gmm_init": "prior", "augment_rotation": 0.0,
        "augment_shift": 0.0, "augment_scale": 0.0, "augment_target": "view", "round0_epochs": 100,
        "mutual_iterations": 2, "vae_epochs": 100, "manifold": "none"}
VIEWS = {"augment_rotation": 15.0, "augment_shift": 0.12, "augment_scale": 0.1}
CLEAN = {**VIEWS, "augment_target": "clean"}
FINE = {"vae_init": "warm", "round0_epochs": 100, "vae_epochs": 25, "mutual_iterations": 5}

VARIANTS = {
    "base": {},
    "em": {"gmm_init": "em"},
    "views": VIEWS,
    "views-clean": CLEAN,
    "views-clean-em": {**CLEAN, "gmm_init": "em"},
    # the mixture message (VaDE's KL), the round-0 VAE fine-tuned for 25 epochs per round, 4 rounds after round 0
    "mixture-fine": {"prior_from": "mixture", **FINE},
    "mixture-fine-views-clean-em": {"prior_from": "mixture", **FINE, **CLEAN, "gmm_init": "em"},
    "resp-fine-views-clean-em": {**FINE, **CLEAN, "gmm_init": "em"},
    "last-fine-views-clean-em": {"prior_from": "last", **FINE, **CLEAN, "gmm_init": "em"},
    "resp-views-clean-em": {**CLEAN, "gmm_init": "em"},
    "last-views-clean-em": {"prior_from": "last", **CLEAN, "gmm_init": "em"},
    # round 1 retrained for longer than round 0
    "resp-views-clean-em-r200": {**CLEAN, "gmm_init": "em", "round0_epochs": 100, "vae_epochs": 200},
    "last-views-clean-em-r200": {"prior_from": "last", **CLEAN, "gmm_init": "em", "round0_epochs": 100,
                                 "vae_epochs": 200},
    "resp-views-clean-em-50-200": {**CLEAN, "gmm_init": "em", "round0_epochs": 50, "vae_epochs": 200},
    # a stronger pull of the GMM's prior in round 1
    "resp-views-clean-em-r200-pw3": {**CLEAN, "gmm_init": "em", "round0_epochs": 100, "vae_epochs": 200,
                                     "prior_weight": 3.0},
    "last-views-clean-em-r200-pw3": {"prior_from": "last", **CLEAN, "gmm_init": "em", "round0_epochs": 100,
                                     "vae_epochs": 200, "prior_weight": 3.0},
    # most epochs in round 0, then a short fine-tune with the GMM's message
    "resp-views-clean-em-200-fine50": {**CLEAN, "gmm_init": "em", "round0_epochs": 200, "vae_epochs": 50,
                                       "vae_init": "warm"},
    "mixture-views-clean-em-200-fine50": {"prior_from": "mixture", **CLEAN, "gmm_init": "em", "round0_epochs": 200,
                                          "vae_epochs": 50, "vae_init": "warm"},
    # the shipped defaults with the GMM's prior scaled to the latents
    "resp-views-clean-em-r200-dataprior": {**CLEAN, "gmm_init": "em", "round0_epochs": 100, "vae_epochs": 200,
                                           "gmm_prior": "data"},
    "mixture-views-clean-em-r200-pw3": {"prior_from": "mixture", **CLEAN, "gmm_init": "em", "round0_epochs": 100,
                                        "vae_epochs": 200, "prior_weight": 3.0},
    # the mixture message and the fine-tune with the GMM's prior scaled to the latents
    "mixture-views-clean-em-r200-dataprior": {"prior_from": "mixture", **CLEAN, "gmm_init": "em", "round0_epochs": 100,
                                              "vae_epochs": 200, "gmm_prior": "data"},
    "mixture-views-clean-em-200-fine50-dataprior": {"prior_from": "mixture", **CLEAN, "gmm_init": "em",
                                                    "round0_epochs": 200, "vae_epochs": 50, "vae_init": "warm",
                                                    "gmm_prior": "data"},
    "resp-views-clean-em-200-fine50-dataprior": {**CLEAN, "gmm_init": "em", "round0_epochs": 200, "vae_epochs": 50,
                                                 "vae_init": "warm", "gmm_prior": "data"},
    "mixture-views-clean-em-200-fine25x4-dataprior": {"prior_from": "mixture", **CLEAN, "gmm_init": "em",
                                                      "round0_epochs": 200, "vae_epochs": 25, "vae_init": "warm",
                                                      "mutual_iterations": 5, "gmm_prior": "data"},
    # the shipped defaults with two views per image and step and their contrastive loss
    "resp-views-clean-em-r200-c10": {**CLEAN, "gmm_init": "em", "round0_epochs": 100, "vae_epochs": 200,
                                     "contrast_weight": 10.0},
    "mixture-views-clean-em-200-fine25x4-dataprior-c10": {"prior_from": "mixture", **CLEAN, "gmm_init": "em",
                                                          "round0_epochs": 200, "vae_epochs": 25, "vae_init": "warm",
                                                          "mutual_iterations": 5, "gmm_prior": "data",
                                                          "contrast_weight": 10.0},
    "resp-views-clean-em-r200-c10-dataprior": {**CLEAN, "gmm_init": "em", "round0_epochs": 100, "vae_epochs": 200,
                                               "contrast_weight": 10.0, "gmm_prior": "data"},
    # does the mixture message keep improving the representation with more rounds?
    "mixture-views-clean-em-200-fine25x8-dataprior": {"prior_from": "mixture", **CLEAN, "gmm_init": "em",
                                                      "round0_epochs": 200, "vae_epochs": 25, "vae_init": "warm",
                                                      "mutual_iterations": 9, "gmm_prior": "data"},
}


def parse_variant(name):
    """A named variant of VARIANTS, or inline overrides ``label:key=value,...`` of BASE."""
    return _parse_variant(name, VARIANTS)


def run_one(variant, overrides, data, seed, threads):
    from vaegmm.config import TrainConfig
    from vaegmm.evaluate import _evaluate_seed

    config = TrainConfig().replace(**{**BASE, **overrides}, data=data)
    result = _evaluate_seed(config, seed, threads)
    return {"variant": variant, "overrides": overrides, "data": data, **result}


def load_results():
    if not RESULTS.exists():
        return []
    return [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]


def command_run(args):
    done = {(r["variant"], r["data"], r["seed"]) for r in load_results()}
    jobs = [(variant, overrides, args.data, seed)
            for variant, overrides in map(parse_variant, args.variants)
            for seed in parse_seeds(args.seeds) if (variant, args.data, seed) not in done]
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"{len(jobs)} runs, {args.jobs} at a time, {threads} thread(s) each", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(run_one, *zip(*jobs), [threads] * len(jobs)) if jobs else []:
            with RESULTS.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"{row['variant']:<28} {row['data']} seed {row['seed']}: "
                  + " ".join(f"r{i} {r['accuracy']:.3f}" for i, r in enumerate(row["rounds"]))
                  + f" | apart {row['apart']['accuracy']:.3f} | EM read-out r0 {row['readout']['round0']['accuracy']:.3f}"
                  f" apart {row['readout']['apart']['accuracy']:.3f} mutual {row['readout']['mutual']['accuracy']:.3f}"
                  f"  ({row['mutual_seconds']:.0f} + {row['apart_seconds']:.0f} s)", flush=True)


def command_table(args):
    rows = [r for r in load_results() if r["data"] == args.data]
    if args.seeds:
        seeds = set(parse_seeds(args.seeds))
        rows = [r for r in rows if r["seed"] in seeds]
    print(f"{args.data}, accuracy mean ± std over seeds (Gibbs: final sweep; EM: read-out of the same latents)\n")
    print("| variant | seeds | round 0 | apart | mutual | mutual − apart | EM round 0 | EM apart | EM mutual "
          "| s / run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    table = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == variant]
        cell = lambda values: f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"  # noqa: E731
        get = lambda key, readout=False: [(r["readout"] if readout else r)[key]["accuracy"] for r in runs]  # noqa: E731
        gain = 100 * (np.mean(get("mutual")) - np.mean(get("apart")))
        table.append((np.mean(get("mutual")), f"| {variant} | {len(runs)} | {cell(get('round0'))} | {cell(get('apart'))} | "
                      f"{cell(get('mutual'))} | {gain:+.1f} | {cell(get('round0', True))} | {cell(get('apart', True))} | "
                      f"{cell(get('mutual', True))} | {np.mean([r['mutual_seconds'] for r in runs]):.0f} |"))
    for _, line in sorted(table, key=lambda item: -item[0]) if args.sort else table:
        print(line)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="score variants over seeds on one dataset, appending to suite_results.jsonl")
    run.add_argument("variants", nargs="+")
    run.add_argument("--data", default="mnist5k-a")
    run.add_argument("--seeds", default="100-102")
    run.add_argument("--jobs", type=int, default=2)
    table = sub.add_parser("table", help="print the results of one dataset as a markdown table")
    table.add_argument("--data", default="mnist5k-a")
    table.add_argument("--seeds", help="only these seeds (default: all)")
    table.add_argument("--sort", action="store_true", help="by mutual's mean accuracy")
    args = parser.parse_args(argv)
    {"run": command_run, "table": command_table}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
