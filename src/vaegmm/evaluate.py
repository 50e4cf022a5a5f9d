"""Multi-seed evaluation against fair baselines, and prediction on new data.

``evaluate`` trains one configuration with several seeds and scores three things per seed:

- ``round0``: round 0 of the mutual-learning run (the VAE with the N(0, I) prior, then the GMM);
- ``apart``: the VAE trained alone for as many epochs as all rounds together (same KL weight),
  then the GMM, with no feedback (a run of one round of ``vae_epochs * mutual_iterations``
  epochs, same seed);
- ``mutual``: the last round of mutual learning.

Labels only score: they never choose a seed, a sweep or a setting.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .data import load_dataset
from .metrics import clustering_metrics, match_clusters
from .mutual import encode, fit_mutual
from .rundir import RunDirectory, write_json

__all__ = ["evaluate", "predict", "summarise", "apart_config", "mean_std"]

_METRICS = ("accuracy", "ari", "nmi")
_SETTINGS = ("round0", "apart", "mutual")


def _scores(metrics):
    return {name: metrics[name] for name in _METRICS}


def apart_config(config):
    """The apart baseline of ``config``: one round (no feedback) of as many VAE epochs as all
    of its rounds together, same everything else (augmentation and architecture included)."""
    return config.replace(mutual_iterations=1, vae_epochs=config.total_epochs, round0_epochs=None)


def _evaluate_seed(config, seed, threads):
    """Scores of one seed: round 0, apart, mutual (last round), every round, and times."""
    if threads is not None:
        torch.set_num_threads(threads)
    dataset = load_dataset(config.data, max_samples=config.max_samples, seed=config.seed)
    if dataset.labels is None:
        raise ValueError(f"evaluate needs labelled data to score; {config.data!r} has no labels.")
    seeded = config.replace(seed=seed)
    started = time.perf_counter()
    mutual = fit_mutual(dataset, seeded, progress=False, log=None)
    mutual_seconds = time.perf_counter() - started
    started = time.perf_counter()
    apart = fit_mutual(dataset, apart_config(seeded), progress=False, log=None)
    apart_seconds = time.perf_counter() - started
    rounds = [_scores(r.metrics) for r in mutual.rounds]
    return {
        "seed": seed,
        "round0": rounds[0],
        "apart": _scores(apart.rounds[0].metrics),
        "mutual": rounds[-1],
        "rounds": rounds,
        "mutual_seconds": mutual_seconds,
        "apart_seconds": apart_seconds,
    }


def mean_std(values):
    """{"mean", "std"} of ``values``: the sample standard deviation (ddof=1), 0 for one value."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def summarise(per_seed):
    """Mean and (sample) standard deviation over seeds of every setting's metrics and times."""
    summary = {setting: {m: mean_std([s[setting][m] for s in per_seed]) for m in _METRICS} for setting in _SETTINGS}
    n_rounds = len(per_seed[0]["rounds"])
    summary["rounds"] = [{m: mean_std([s["rounds"][r][m] for s in per_seed]) for m in _METRICS} for r in range(n_rounds)]
    summary["mutual_seconds"] = mean_std([s["mutual_seconds"] for s in per_seed])
    summary["apart_seconds"] = mean_std([s["apart_seconds"] for s in per_seed])
    return summary


def evaluate(config, seeds=(0, 1, 2, 3, 4), *, jobs=1, out=None, progress=True):
    """Train ``config`` once per seed and score round 0, the apart baseline and mutual learning.

    Parameters
    ----------
    config : TrainConfig
        Its ``seed`` only chooses the data subset when ``max_samples`` is set; each run uses
        one of ``seeds``.
    seeds : sequence of int
    jobs : int
        Seeds trained in parallel processes (each with ``cpu_count // jobs`` torch threads).
    out : path, default=None
        Folder for ``evaluation.json`` and ``evaluation.png``.

    Returns
    -------
    dict with "config", "seeds", "per_seed" (list) and "summary" (mean/std per setting)
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("Give at least one seed.")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}.")
    if load_dataset(config.data, max_samples=config.max_samples, seed=config.seed).labels is None:
        raise ValueError(f"evaluate needs labelled data to score; {config.data!r} has no labels.")
    per_seed = []
    if jobs == 1:
        for seed in seeds:
            per_seed.append(_evaluate_seed(config, seed, None))
            if progress:
                print(_seed_line(per_seed[-1]), flush=True)
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(_evaluate_seed, [config] * len(seeds), seeds, [threads] * len(seeds)):
                per_seed.append(result)
                if progress:
                    print(_seed_line(result), flush=True)
    evaluation = {"config": config.to_dict(), "seeds": seeds, "per_seed": per_seed, "summary": summarise(per_seed)}
    if out is not None:
        from .plots import plot_evaluation

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "evaluation.json", evaluation)
        plot_evaluation(evaluation["summary"], per_seed, out / "evaluation.png")
    return evaluation


def _seed_line(result):
    parts = [f"{setting} " + " ".join(f"{m} {result[setting][m]:.4f}" for m in _METRICS) for setting in _SETTINGS]
    seconds = result["mutual_seconds"] + result["apart_seconds"]
    return f"seed {result['seed']}: " + " | ".join(parts) + f"  ({seconds:.0f} s)"


def format_summary(evaluation):
    """The table of mean ± std per setting, as text lines."""
    summary = evaluation["summary"]
    lines = [f"{'setting':<8} " + " ".join(f"{m:>17}" for m in _METRICS)]
    for setting in _SETTINGS:
        cells = [f"{summary[setting][m]['mean']:.4f} ± {summary[setting][m]['std']:.4f}" for m in _METRICS]
        lines.append(f"{setting:<8} " + " ".join(f"{c:>17}" for c in cells))
    return lines


@torch.no_grad()
def predict(run_dir, source, *, iteration=None, device="cpu"):
    """Cluster new images with a run's encoder (means) and GMM.

    Parameters
    ----------
    run_dir : path
    source : str
        Data as for :func:`vaegmm.data.load_dataset`; the images must have the run's size.
    iteration : int, default=None
        Round to use; the last if None.

    Returns
    -------
    dict with "assignments" (n,), "probabilities" (n, K), "labels" (n,) or None, and
    "metrics": accuracy (using the cluster-to-label matching found on the training data), ARI
    and NMI, or None without labels (or when the run has no training labels, for accuracy).
    """
    run = RunDirectory(run_dir)
    if iteration is None:
        available = run.iterations()
        iteration = available[-1] if available else 0
    vae, image_shape = run.load_vae(iteration, device)
    gmm = run.load_gmm(iteration)
    dataset = load_dataset(source)
    if dataset.image_shape != tuple(image_shape):
        raise ValueError(
            f"The run was trained on {image_shape[0]}x{image_shape[1]} images but {source} holds "
            f"{dataset.image_shape[0]}x{dataset.image_shape[1]} images."
        )
    latents = encode(vae, torch.as_tensor(dataset.flat(), device=device))
    probabilities = gmm.predict_proba(latents)
    assignments = probabilities.argmax(axis=1)
    metrics = None
    if dataset.labels is not None:
        metrics = {"accuracy": None, **{k: v for k, v in clustering_metrics(dataset.labels, assignments).items()
                                        if k != "accuracy"}}
        training_labels = run.load_labels()
        if training_labels is not None:
            mapping = match_clusters(training_labels, run.load_array(iteration, "assignments"))
            mapped = np.array([mapping.get(int(k), -1) for k in assignments])
            metrics["accuracy"] = float(np.mean(mapped == dataset.labels))
    return {"iteration": iteration, "assignments": assignments, "probabilities": probabilities,
            "labels": dataset.labels, "metrics": metrics}


def save_predictions(prediction, out):
    """Write ``assignments.npy``, ``probabilities.npy``, ``predictions.csv`` and, with labels,
    ``metrics.json`` into folder ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "assignments.npy", prediction["assignments"])
    np.save(out / "probabilities.npy", prediction["probabilities"])
    n_clusters = prediction["probabilities"].shape[1]
    header = "index,cluster," + ",".join(f"p{k}" for k in range(n_clusters))
    columns = [np.arange(len(prediction["assignments"])), prediction["assignments"]]
    rows = np.column_stack([*columns, prediction["probabilities"]])
    fmt = ["%d", "%d"] + ["%.6g"] * n_clusters
    if prediction["labels"] is not None:
        header = header.replace("cluster,", "cluster,label,", 1)
        rows = np.column_stack([*columns, prediction["labels"], prediction["probabilities"]])
        fmt = ["%d", "%d", "%d"] + ["%.6g"] * n_clusters
    np.savetxt(out / "predictions.csv", rows, delimiter=",", header=header, comments="", fmt=fmt)
    paths = [out / "assignments.npy", out / "probabilities.npy", out / "predictions.csv"]
    if prediction["metrics"] is not None:
        (out / "metrics.json").write_text(json.dumps({"iteration": prediction["iteration"], **prediction["metrics"]},
                                                     indent=2) + "\n")
        paths.append(out / "metrics.json")
    return paths
