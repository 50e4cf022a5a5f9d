"""Multi-seed evaluation against fair baselines, over one dataset or a suite; prediction on new data.

``evaluate`` trains one configuration with several seeds and scores three things per seed:

- ``round0``: round 0 of the mutual-learning run (the VAE with the N(0, I) prior, then the GMM);
- ``apart``: the VAE trained alone for as many epochs as all rounds together, with everything
  else of the configuration (augmentation, architecture, KL weight), then the GMM, with no
  feedback (a run of one round of ``config.total_epochs`` epochs, same seed);
- ``mutual``: the last round of mutual learning.

Each is scored twice: by the assignments of the GMM's final Gibbs sweep (what a run reports),
and by a **stable read-out** of the same latents, EM with ``READOUT_RESTARTS`` k-means-started
restarts kept by likelihood (so that a better representation is seen as such, whatever the luck
of one Gibbs chain). With ``manifold="umap"`` the read-out fits what the GMM clusters, the round's
UMAP embedding (the apart baseline gets the same manifold step). ``evaluate_suite`` does the same
on several datasets (``SUITE``) and adds the margins of mutual learning over both baselines per
dataset. ``evaluate_multimodal`` does the same for paired modalities (one VAE per modality,
one GMM; :mod:`vaegmm.multimodal`), adding ``alone_<m>``: each modality's own single-modality run.

Data drawn at random (a ``max_samples`` subset, the class proportions of
``mnist5k-imbalanced``) are drawn with each run's seed. Labels only score: they never choose a
seed, a sweep, a chain or a setting.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .data import SUITE, load_dataset
from .gibbs import em_labels
from .metrics import clustering_metrics, match_clusters
from .modules import encode_views, random_views
from .mutual import encode, fit_mutual
from .rundir import RunDirectory, write_json
from .threads import set_threads

__all__ = ["evaluate", "evaluate_suite", "evaluate_multimodal", "predict", "summarise", "apart_config", "mean_std", "readout_metrics",
           "SUITE", "READOUT_RESTARTS"]

_METRICS = ("accuracy", "ari", "nmi")
_SETTINGS = ("round0", "apart", "mutual")
READOUT_RESTARTS = 10


def _scores(metrics):
    """accuracy, ARI, NMI (and, when the GMM found K, that K and the many-to-one accuracy)."""
    found = {key: metrics[key] for key in ("clusters_found", "accuracy_many_to_one") if key in metrics}
    return {**{name: metrics[name] for name in _METRICS}, **found}


def apart_config(config):
    """The apart baseline of ``config``: one round (no feedback) of as many VAE epochs as all
    of its rounds together, same everything else (augmentation and architecture included)."""
    return config.replace(mutual_iterations=1, vae_epochs=config.total_epochs, round0_epochs=config.total_epochs)


def readout_metrics(latents, labels, n_clusters, seed=0, restarts=READOUT_RESTARTS):
    """Accuracy, ARI and NMI of a full-covariance Gaussian mixture fitted to ``latents`` by EM,
    the most likely of ``restarts`` k-means-started fits (labels only score)."""
    reg_covar = 1e-6 * float(np.mean(np.var(latents, axis=0))) + 1e-9
    return clustering_metrics(labels, em_labels(latents, n_clusters, restarts, seed, reg_covar))


def _evaluate_seed(config, seed, threads):
    """Scores of one seed: round 0, apart, mutual (last round), every round, by the final Gibbs
    sweep and by the EM read-out, and times."""
    if threads is not None:
        set_threads(threads)
    dataset = load_dataset(config.data, max_samples=config.max_samples, seed=seed)
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

    def readout(result):  # EM with the chain's K (the K it found when it finds K; labels never choose)
        n_clusters = result.gmm.n_clusters_found_ if config.finds_k else config.n_clusters
        clustered = result.latents if result.embedding is None else result.embedding  # what the GMM clustered
        return readout_metrics(clustered, dataset.labels, n_clusters, seed)

    readout_rounds = [readout(r) for r in mutual.rounds]
    return {
        "dataset": config.data,
        "seed": seed,
        "n_samples": len(dataset),
        "round0": rounds[0],
        "apart": _scores(apart.rounds[0].metrics),
        "mutual": rounds[-1],
        "rounds": rounds,
        "readout": {"round0": readout_rounds[0], "apart": readout(apart.rounds[0]), "mutual": readout_rounds[-1],
                    "rounds": readout_rounds},
        "mutual_seconds": mutual_seconds,
        "apart_seconds": apart_seconds,
    }


def mean_std(values):
    """{"mean", "std"} of ``values``: the sample standard deviation (ddof=1), 0 for one value."""
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def _summarise_scores(per_seed):
    summary = {setting: {m: mean_std([s[setting][m] for s in per_seed]) for m in _METRICS} for setting in _SETTINGS}
    n_rounds = len(per_seed[0]["rounds"])
    summary["rounds"] = [{m: mean_std([s["rounds"][r][m] for s in per_seed]) for m in _METRICS} for r in range(n_rounds)]
    accuracy = {setting: np.array([s[setting]["accuracy"] for s in per_seed]) for setting in _SETTINGS}
    summary["margins"] = {  # points of mean accuracy, and seeds on which mutual beats round 0
        "over_round0": float(100 * (accuracy["mutual"] - accuracy["round0"]).mean()),
        "over_apart": float(100 * (accuracy["mutual"] - accuracy["apart"]).mean()),
        "seeds_above_round0": int(np.sum(accuracy["mutual"] > accuracy["round0"])),
        "seeds": len(per_seed),
    }
    return summary


def summarise(per_seed):
    """Mean and (sample) standard deviation over seeds of every setting's metrics (final Gibbs
    sweep, and under "readout" the EM read-out), the margins of mutual learning, and times."""
    summary = _summarise_scores(per_seed)
    summary["readout"] = _summarise_scores([s["readout"] for s in per_seed])
    summary["mutual_seconds"] = mean_std([s["mutual_seconds"] for s in per_seed])
    summary["apart_seconds"] = mean_std([s["apart_seconds"] for s in per_seed])
    return summary


def _check(config, seeds, jobs):
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("Give at least one seed.")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}.")
    if load_dataset(config.data, max_samples=config.max_samples, seed=seeds[0]).labels is None:
        raise ValueError(f"evaluate needs labelled data to score; {config.data!r} has no labels.")
    return seeds


def _run(tasks, jobs, progress, function=None, line=None):
    """``function(*task, threads)`` (default :func:`_evaluate_seed`) over ``tasks``, in order,
    ``jobs`` at a time; with ``progress``, ``line(result)`` printed as each ends."""
    function, line = function or _evaluate_seed, line or _seed_line
    results = []
    if jobs == 1:
        for task in tasks:
            results.append(function(*task, None))
            if progress:
                print(line(results[-1]), flush=True)
        return results
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for result in pool.map(function, *zip(*tasks), [threads] * len(tasks)):
            results.append(result)
            if progress:
                print(line(result), flush=True)
    return results


def _save(evaluation, out):
    from .plots import plot_evaluation

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluation.json", evaluation)
    plot_evaluation(evaluation["summary"], evaluation["per_seed"], out / "evaluation.png")


def evaluate(config, seeds=(0, 1, 2, 3, 4), *, jobs=1, out=None, progress=True):
    """Train ``config`` once per seed and score round 0, the apart baseline and mutual learning.

    Parameters
    ----------
    config : TrainConfig
        Each run uses one of ``seeds`` (for training and for any random draw of the data).
    seeds : sequence of int
    jobs : int
        Seeds trained in parallel processes (each with ``cpu_count // jobs`` torch threads).
    out : path, default=None
        Folder for ``evaluation.json`` and ``evaluation.png``.

    Returns
    -------
    dict with "config", "seeds", "per_seed" (list) and "summary" (mean/std per setting)
    """
    seeds = _check(config, seeds, jobs)
    per_seed = _run([(config, seed) for seed in seeds], jobs, progress)
    evaluation = {"config": config.to_dict(), "seeds": seeds, "per_seed": per_seed, "summary": summarise(per_seed)}
    if out is not None:
        _save(evaluation, out)
    return evaluation


def evaluate_suite(config, datasets=SUITE, seeds=(0, 1, 2, 3, 4), *, jobs=1, out=None, progress=True):
    """:func:`evaluate` on every dataset of ``datasets`` (``config.data`` replaced), all runs
    sharing one pool of ``jobs`` processes.

    Returns
    -------
    dict with "config", "seeds", "datasets" ({name: evaluation as from :func:`evaluate`}) and
    "overall" (the summary over every dataset's runs pooled). With ``out``, each dataset's
    evaluation goes to ``out/<dataset>/`` and the whole to ``out/suite.json``.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("Give at least one dataset.")
    configs = {name: config.replace(data=name) for name in datasets}
    for name in datasets:  # every dataset labelled, before any training
        seeds = _check(configs[name], seeds, jobs)
    results = _run([(configs[name], seed) for name in datasets for seed in seeds], jobs, progress)
    suite = {"config": config.to_dict(), "seeds": seeds, "datasets": {}}
    for i, name in enumerate(datasets):
        per_seed = results[i * len(seeds):(i + 1) * len(seeds)]
        suite["datasets"][name] = {"config": configs[name].to_dict(), "seeds": seeds, "per_seed": per_seed,
                                   "summary": summarise(per_seed)}
        if out is not None:
            _save(suite["datasets"][name], Path(out) / _folder_name(name))
    suite["overall"] = summarise(results)
    if out is not None:
        write_json(Path(out) / "suite.json", suite)
    return suite


def _evaluate_multimodal_seed(sources, config, seed, threads):
    """Scores of one seed of multimodal learning: round 0, apart (each modality's VAE alone as long,
    latents concatenated, the same GMM step), mutual, and alone_<i> (modality i's own
    single-modality mutual learning), by the final state and by the EM read-out."""
    from .multimodal import fit_multimodal, load_views, modality_config, multimodal_config

    if threads is not None:
        set_threads(threads)
    views, labels = load_views(sources, max_samples=config.max_samples, seed=seed)
    if labels is None:
        raise ValueError(f"evaluate needs labelled data to score; none of {', '.join(sources)} has labels.")
    seeded = multimodal_config(config.replace(seed=seed))  # alone_<i> too: the joint run's settings and manifold
    started = time.perf_counter()
    mutual = fit_multimodal(views, seeded, labels=labels, progress=False, log=None)
    mutual_seconds = time.perf_counter() - started
    apart = fit_multimodal(views, apart_config(seeded), labels=labels, progress=False, log=None)
    names = [f"vae_{m}" for m in range(len(views))]

    def joint(outboxes):  # what the GMM clustered: the latents side by side, or with a manifold their embedding
        if "manifold" in outboxes:
            return outboxes["manifold"]["embedding"]
        return np.concatenate([outboxes[name]["latents"] for name in names], axis=1)

    def score(outboxes):
        return clustering_metrics(labels, outboxes["gmm"]["assignments"])

    result = {"dataset": "+".join(sources), "seed": seed, "n_samples": len(labels),
              "round0": score(mutual.engine.outboxes[0]), "apart": score(apart.engine.outboxes[0]),
              "mutual": score(mutual.engine.outboxes[-1]),
              "rounds": [score(outboxes) for outboxes in mutual.engine.outboxes],
              "readout": {"round0": readout_metrics(joint(mutual.engine.outboxes[0]), labels, config.n_clusters, seed),
                          "apart": readout_metrics(joint(apart.engine.outboxes[0]), labels, config.n_clusters, seed),
                          "mutual": readout_metrics(joint(mutual.engine.outboxes[-1]), labels, config.n_clusters, seed)},
              "mutual_seconds": mutual_seconds}
    for i, view in enumerate(views):
        alone = fit_mutual(view, modality_config(seeded, view), progress=False, log=None)  # as in the joint run
        result[f"alone_{i}"] = _scores(alone.rounds[-1].metrics)
        last = alone.rounds[-1]
        result["readout"][f"alone_{i}"] = readout_metrics(last.latents if last.embedding is None else last.embedding,
                                                          labels, config.n_clusters, seed)
    return result


def _multimodal_line(result):
    settings = [k for k in result if k in _SETTINGS or k.startswith("alone_")]
    return f"{result['dataset']} seed {result['seed']}: " + " | ".join(
        f"{k} {result[k]['accuracy']:.4f}" for k in settings)


def summarise_multimodal(per_seed):
    """Mean and std over seeds of every setting (final state, and the EM read-out), and the
    margins of mutual learning over apart and over the best single modality alone."""
    settings = [key for key in per_seed[0] if key in _SETTINGS or key.startswith("alone_")]
    summary = {}
    for where, rows in (("final", per_seed), ("readout", [s["readout"] for s in per_seed])):
        block = {setting: {m: mean_std([r[setting][m] for r in rows]) for m in _METRICS} for setting in settings}
        accuracy = {setting: np.array([r[setting]["accuracy"] for r in rows]) for setting in settings}
        alone = np.max([accuracy[s] for s in settings if s.startswith("alone_")], axis=0)
        block["margins"] = {
            "over_apart": float(100 * (accuracy["mutual"] - accuracy["apart"]).mean()),
            "over_best_alone": float(100 * (accuracy["mutual"] - alone).mean()),
            "over_round0": float(100 * (accuracy["mutual"] - accuracy["round0"]).mean()),
            "seeds_3_points_above_every_alone_and_apart": int(np.sum(
                (accuracy["mutual"] - np.maximum(alone, accuracy["apart"])) >= 0.03)),
            "seeds": len(rows),
        }
        summary.update(block) if where == "final" else summary.update(readout=block)
    summary["mutual_seconds"] = mean_std([s["mutual_seconds"] for s in per_seed])
    return summary


def evaluate_multimodal(sources, config, seeds=(0, 1, 2, 3, 4), *, jobs=1, out=None, progress=True):
    """Multimodal learning over the paired modalities ``sources`` (see
    :func:`vaegmm.multimodal.load_views`), once per seed, scored against apart and each modality
    alone.

    Returns
    -------
    dict with "sources", "config", "seeds", "per_seed" and "summary" (:func:`summarise_multimodal`)
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("Give at least one seed.")
    if not (isinstance(jobs, int) and jobs >= 1):
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}.")
    sources = [str(s) for s in sources]
    per_seed = _run([(sources, config, seed) for seed in seeds], jobs, progress, _evaluate_multimodal_seed,
                    _multimodal_line)
    evaluation = {"sources": sources, "config": config.to_dict(), "seeds": seeds, "per_seed": per_seed,
                  "summary": summarise_multimodal(per_seed)}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "evaluation.json", evaluation)
    return evaluation


def format_multimodal(evaluation):
    """The summary table of :func:`evaluate_multimodal`."""
    summary = evaluation["summary"]
    settings = [k for k in summary if k in _SETTINGS or k.startswith("alone_")]
    lines = [f"{'setting':<10} {'final acc':>16} {'read-out acc':>16}"]
    for setting in settings:
        final, readout = summary[setting]["accuracy"], summary["readout"][setting]["accuracy"]
        lines.append(f"{setting:<10} {final['mean']:.4f} ± {final['std']:.4f}  {readout['mean']:.4f} ± "
                     f"{readout['std']:.4f}")
    margins = summary["margins"]
    lines.append(f"mutual over apart {margins['over_apart']:+.1f} points, over the best modality alone "
                 f"{margins['over_best_alone']:+.1f}; >= 3 points above every alone and apart on "
                 f"{margins['seeds_3_points_above_every_alone_and_apart']} of {margins['seeds']} seeds")
    return "\n".join(lines)


def _folder_name(dataset):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(dataset).name or dataset)


def _seed_line(result):
    parts = [f"{setting} " + " ".join(f"{m} {result[setting][m]:.4f}" for m in _METRICS) for setting in _SETTINGS]
    seconds = result["mutual_seconds"] + result["apart_seconds"]
    return f"{result['dataset']} seed {result['seed']}: " + " | ".join(parts) + f"  ({seconds:.0f} s)"


def format_summary(evaluation):
    """The tables of mean ± std per setting (final Gibbs sweep, then the EM read-out) and the
    margins of mutual learning, as text lines."""
    lines = []
    for title, summary in (("final Gibbs sweep", evaluation["summary"]),
                           (f"EM read-out ({READOUT_RESTARTS} restarts)", evaluation["summary"]["readout"])):
        lines.append(f"{title}:")
        lines.append(f"{'setting':<8} " + " ".join(f"{m:>17}" for m in _METRICS))
        for setting in _SETTINGS:
            cells = [f"{summary[setting][m]['mean']:.4f} ± {summary[setting][m]['std']:.4f}" for m in _METRICS]
            lines.append(f"{setting:<8} " + " ".join(f"{c:>17}" for c in cells))
        lines.append(_margin_line(summary["margins"]))
    return lines


def _margin_line(margins):
    return (f"mutual - round0 {margins['over_round0']:+.1f} points, mutual - apart {margins['over_apart']:+.1f} "
            f"points; mutual above round 0 in {margins['seeds_above_round0']} of {margins['seeds']} seeds")


def format_suite(suite):
    """Per dataset and overall: mean accuracy of round 0, apart and mutual (Gibbs; EM read-out)
    and the margins, as text lines."""
    header = (f"{'dataset':<20} {'n':>5} {'round0':>15} {'apart':>15} {'mutual':>15} "
              f"{'mut-r0':>7} {'mut-apart':>9} {'seeds up':>8}")
    lines = []
    titles = (("accuracy, final Gibbs sweep", None), (f"accuracy, EM read-out ({READOUT_RESTARTS} restarts)", "readout"))
    for title, key in titles:
        lines += [f"{title} (mean ± std over seeds {','.join(map(str, suite['seeds']))}):", header]
        rows = [(name, ev["per_seed"][0]["n_samples"], ev["summary"]) for name, ev in suite["datasets"].items()]
        rows.append(("overall", None, suite["overall"]))
        for name, n, summary in rows:
            summary = summary if key is None else summary[key]
            cells = [f"{summary[s]['accuracy']['mean']:.4f} ± {summary[s]['accuracy']['std']:.3f}" for s in _SETTINGS]
            m = summary["margins"]
            margins = f" {m['over_round0']:+7.1f} {m['over_apart']:+9.1f} {m['seeds_above_round0']:>4}/{m['seeds']:<3}"
            lines.append(f"{name:<20} {'' if n is None else n:>5} " + " ".join(f"{c:>15}" for c in cells) + margins)
    return lines


@torch.no_grad()
def predict(run_dir, source, *, iteration=None, device="cpu"):
    """Cluster new images with a run's encoder (means) and GMM; with a manifold (``manifold="umap"``),
    encoder -> the round's fitted UMAP's ``transform`` (``manifold.pkl``, never refitted) -> GMM.

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
    config = run.load_config()  # the latents as the run sent them (encode_views: averaged over random views)
    views = encode_views(config, random_views(config, image_shape), config.seed, device)
    clustered = encode(vae, torch.as_tensor(dataset.flat(), device=device), **views)  # latents (n, L)
    if run.has_manifold(iteration):
        from .manifold import transform

        clustered = transform(run.load_manifold(iteration), clustered)  # their embedding (n, d), as trained
    probabilities = gmm.predict_proba(clustered)
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
