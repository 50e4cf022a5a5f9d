"""Multimodal categories: M modalities of the same N data, one VAE per modality and one GMM whose
category generates every modality's latent (SERKET's VAE+GMM with several observations; the seed
author's Multimodal-GMM), as a wiring of :mod:`vaegmm.engine`::

    VAEStep "vae_0" --latents--> JointGMM "gmm" --prior (vae_0's block)--> vae_0 (next round)
    VAEStep "vae_1" --latents-->             \\--prior (vae_1's block)--> vae_1 (next round)

The GMM clusters the concatenated latents [z^(0), z^(1), ...] with full covariance matrices: each
category is one Gaussian over all modalities together, so a category can tie a direction of one
modality's latent to a direction of another's, and the data-scaled Gauss-Wishart prior (the
default ``gmm_prior="data"``) follows every modality's scale at once. The prior it sends
modality m is the marginal, over m's block, of the datum's prior over the whole (with the default
``prior_from="responsibilities"``: the moments of the mixture weighted by the responsibilities
that every modality's latent shaped). That is the message each modality lacks alone: which
category the *other* modalities put the datum in.

With ``manifold="umap"`` (given explicitly; multimodal runs default to none) a third module,
:class:`~vaegmm.manifold.JointEmbed` "manifold", embeds the concatenated active latents with UMAP;
the GMM clusters that embedding, and each VAE's prior is built from the moments of *its own*
latents in each category, weighted by the GMM's responsibilities (as a single run's manifold
does). ``gmm.npz`` then holds those moments as categories over the concatenated latents
(block-diagonal), which is what ``predict`` (any subset of the modalities) and the figures read.

Rows are paired: row n of every modality is the same datum. Built-in two-view sets (from
``mnist5k``, 5,000 digits; ``mnist5k-a-rotated`` and ``mnist5k-a-partner`` the same from its half
``mnist5k-a``, where settings are chosen):

- ``"mnist5k-rotated"``: view 1 the digits, view 2 the same digits rotated by 45 degrees (the
  naming game's agent B); the views carry nearly the same information;
- ``"mnist5k-partner"``: view 1 the digits, view 2 *another* digit of the same class with uniform
  noise U(0, 1) added to every pixel and clipped to [0, 1] (the second view of "noisy MNIST",
  Wang, Arora, Livescu & Bilmes, ICML 2015; partners paired by class with the seed when the set is
  built); the views err independently given the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import torch

from .data import DataError, ImageDataset, load_dataset
from .distributed import SINGLE
from .engine import Graph, GraphResult, LabelScore, run
from .manifold import JointEmbed
from .modules import JointGMM, VAEStep  # noqa: F401 - VAEStep, JointGMM: this system's modules
from .mutual import check_data, resolve_device
from .rundir import atomic_write_bytes, load_vae_file, write_file

__all__ = ["VAEStep", "JointGMM", "TWO_VIEW_SETS", "load_views", "partner_view", "multimodal_graph", "modality_config",
           "write_multimodal_report", "predict_multimodal", "multimodal_config", "infer_categories", "conditional_latents",
           "fit_multimodal", "MultimodalResult", "cross_modal_recall"]

# The two-view sets of mnist5k, and of its half mnist5k-a (2,500 digits: where settings are chosen).
TWO_VIEW_SETS = ("mnist5k-rotated", "mnist5k-partner", "mnist5k-a-rotated", "mnist5k-a-partner")
ROTATION = 45.0


def partner_view(dataset, seed=0):
    """Noisy MNIST's second view: row n is another image of row n's class (partners drawn with
    ``seed``; no image is its own partner where its class has two) plus U(0, 1) noise per pixel,
    clipped to [0, 1]."""
    if dataset.labels is None:
        raise DataError(f"{dataset.name} has no labels; a same-class partner view needs them.")
    rng = np.random.default_rng([seed, 2])
    partner = np.arange(len(dataset))
    for label in np.unique(dataset.labels):
        members = rng.permutation(np.flatnonzero(dataset.labels == label))
        partner[members] = np.roll(members, 1)
    noisy = dataset.images[partner] + rng.random(dataset.images.shape, dtype=np.float32)
    return ImageDataset(np.clip(noisy, 0.0, 1.0).astype(np.float32), dataset.labels,
                        f"{dataset.name} partner + noise")


def load_views(sources, *, max_samples=None, seed=0):
    """The paired modalities of ``sources``: one built-in two-view set name, or several data
    sources (as ``load_dataset``'s) whose row n is the same datum. Returns (datasets, labels):
    labels from any source that has them (None if none), for scoring only.

    Raises DataError (one sentence) on differing row counts or labels that contradict each other.
    """
    sources = [str(s) for s in sources]
    if len(sources) == 1 and sources[0] in TWO_VIEW_SETS:
        base = load_dataset(sources[0].rsplit("-", 1)[0], max_samples=max_samples, seed=seed)
        if sources[0].endswith("-rotated"):
            from .naming_game import rotated_view

            views = [base, rotated_view(base, ROTATION)]
        else:
            views = [base, partner_view(base, seed)]
        return views, base.labels
    if len(sources) < 2:
        raise DataError(f"Multimodal training needs two or more --data sources (or one of {', '.join(TWO_VIEW_SETS)}); "
                        f"got {len(sources)}.")
    views = [load_dataset(source) for source in sources]
    counts = [len(v) for v in views]
    if len(set(counts)) > 1:
        raise DataError(f"The modalities hold {', '.join(map(str, counts))} rows ({', '.join(sources)}); paired "
                        "modalities need the same number of rows, row n of each being the same datum.")
    labelled = [(source, v.labels) for source, v in zip(sources, views) if v.labels is not None]
    for source, labels in labelled[1:]:
        if not np.array_equal(labels, labelled[0][1]):
            row = int(np.flatnonzero(labels != labelled[0][1])[0])
            raise DataError(f"{source} and {labelled[0][0]} give different labels (first at row {row}); the rows are "
                            "not paired, or one label file is wrong.")
    if max_samples is not None and max_samples < counts[0]:
        keep = np.sort(np.random.default_rng(seed).choice(counts[0], size=max_samples, replace=False))
        views = [v.subset(keep) for v in views]
    return views, next((v.labels for v in views if v.labels is not None), None)


def modality_config(config, dataset):
    """A modality's VAE settings from the run's: images keep them; feature vectors (Gaussian
    likelihood) train without image augmentation, with at most half their features as latent
    dimensions."""
    if getattr(dataset, "likelihood", "bernoulli") == "bernoulli":
        return config.replace(data=dataset.name)
    features = int(np.prod(dataset.image_shape))
    return config.replace(data=dataset.name, augment_rotation=0.0, augment_shift=0.0, augment_scale=0.0,
                          contrast_weight=0.0, encode_views=0,
                          latent_dim=min(config.latent_dim, max(1, features // 2)))


def multimodal_graph(datasets, config, configs=None, device=None, distributed=None):
    """The graph of :func:`fit_multimodal`: ``vae_0 .. vae_{M-1}`` and ``gmm``, wired both ways
    (each VAE's settings :func:`modality_config` unless ``configs`` gives them; ``distributed``:
    every module on this rank's part, :func:`fit_multimodal`)."""
    configs = list(configs) if configs is not None else [modality_config(config, v) for v in datasets]
    if len(configs) != len(datasets):
        raise ValueError(f"{len(datasets)} modalities but {len(configs)} VAE configs; give one per modality.")
    graph = Graph()
    names = [f"vae_{m}" for m in range(len(datasets))]
    for name, dataset, vae_config in zip(names, datasets, configs):
        graph.add(VAEStep(name, dataset, vae_config, device, distributed=distributed))
    gmm_config = config.replace(latent_dim=sum(c.latent_dim for c in configs), wishart_dof=None)
    if config.manifold_used == "umap":
        graph.add(JointEmbed("manifold", config, device, distributed=distributed))
        for name in names:
            graph.wire(name, "latents", "manifold")
    graph.add(JointGMM("gmm", gmm_config, device, distributed=distributed))
    for name in names:
        graph.wire(name, "latents", "gmm")
        graph.wire("gmm", "prior", name)
    if config.manifold_used == "umap":
        graph.wire("manifold", "embedding", "gmm")
    return graph


@dataclass
class MultimodalResult:
    graph: Graph
    rounds: List[dict]  # metrics per round
    latents: List[np.ndarray]  # the last round's latents, per modality
    assignments: np.ndarray  # the last round's reported assignments
    engine: GraphResult

    @property
    def gmm(self):
        return self.graph["gmm"].gmm.gmm


def multimodal_config(config):
    """``config`` for multimodal categories: its default manifold made none (the joint GMM clusters
    the modalities' latents); ``manifold="umap"`` given explicitly is kept (UMAP embeds the
    concatenated latents and the GMM clusters the embedding)."""
    return config.without_default_manifold()


def fit_multimodal(datasets, config, *, labels=None, configs=None, sources=None, run_dir=None, resume=False,
                   overwrite=False, progress=True, log=print, stop_requested=None, distributed=None):
    """Train one VAE per modality and one GMM over all of them by mutual learning.

    Parameters
    ----------
    datasets : list of ImageDataset
        The modalities, rows paired.
    config : TrainConfig
        The run's settings: every VAE's (unless ``configs``), the GMM's, rounds and seed.
    labels : array of shape (N,), default=None
        Only to score each round (accuracy, ARI, NMI of the GMM's assignments).
    configs : list of TrainConfig, default=None
        One per modality, for VAEs that differ (architecture, latent_dim, ...).
    sources : list of str, default=None
        Where the modalities came from (``load_views``' sources), recorded in graph.json so that
        ``vaegmm train --resume`` can load them again.
    run_dir, resume, overwrite, progress, log, stop_requested
        As :func:`vaegmm.engine.run`.
    distributed : vaegmm.distributed.Context, default=None
        One rank of a ``torch.distributed`` run (every rank calls ``fit_multimodal`` with the same
        arguments): each VAE trains data-parallel on this rank's shard of its modality, the joint
        GMM's sweeps are sharded, and with the manifold rank 0 fits UMAP (as in
        :func:`~vaegmm.mutual.fit_mutual`). Rank 0 alone writes and logs; every rank returns the
        same result.

    Returns
    -------
    MultimodalResult
    """
    if len(datasets) < 1:
        raise ValueError("fit_multimodal needs at least one modality.")
    config = multimodal_config(config)
    configs = None if configs is None else [multimodal_config(c) for c in configs]
    counts = {len(d) for d in datasets}
    if len(counts) > 1:
        raise ValueError(f"The modalities hold {sorted(counts)} rows; paired modalities need the same number.")
    for dataset, vae_config in zip(datasets, configs or [modality_config(config, d) for d in datasets]):
        check_data(dataset, vae_config)
    context = distributed if distributed is not None else SINGLE
    device = resolve_device(config.device)
    if context.active and device.type == "cuda":
        device = torch.device(context.device)  # this rank's GPU
    graph = multimodal_graph(datasets, config, configs, device, distributed=context)
    observers = [LabelScore(labels, "gmm")] if labels is not None else []
    result = run(graph, config.mutual_iterations, seed=config.seed, run_dir=run_dir, resume=resume,
                 overwrite=overwrite, observers=observers, progress=progress and context.is_main, log=log,
                 stop_requested=stop_requested, distributed=context,
                 settings={"sources": sources, "data": [d.name for d in datasets], "config": config.to_dict()})
    if run_dir is not None and labels is not None and context.is_main:
        write_file(Path(run_dir) / "labels.npy", lambda f: np.save(f, labels))
    last = result.outboxes[-1]
    names = [m.name for m in graph.modules if isinstance(m, VAEStep)]
    return MultimodalResult(graph, result.rounds, [last[n]["latents"] for n in names], last["gmm"]["assignments"],
                            result)


def _marginal_log_prob(gmm, columns, latents):
    """log pi_k + log N(latents | mu_k[columns], Sigma_k[columns, columns]): (n, K)."""
    from scipy.stats import multivariate_normal

    covariances = gmm.covariances_
    return np.stack([np.log(max(w, 1e-300)) + np.atleast_1d(multivariate_normal(
        m[columns], c[np.ix_(columns, columns)], allow_singular=True).logpdf(latents))
        for w, m, c in zip(gmm.weights_, gmm.means_, covariances)], axis=1)


def infer_categories(gmm, columns, latents):
    """Each datum's category posterior from some modalities alone: p(k | z_columns) under the
    GMM's marginal over ``columns`` (the given modalities' clustered dimensions): (n, K)."""
    from scipy.special import softmax

    return softmax(_marginal_log_prob(gmm, np.asarray(columns), latents), axis=1)


def conditional_latents(gmm, source_columns, target_columns, latents, categories):
    """E[z_target | z_source, k] = mu_t + Sigma_ts Sigma_ss^-1 (z_source - mu_s) for each datum's
    category k: (n, len(target_columns))."""
    s, t = np.asarray(source_columns), np.asarray(target_columns)
    recalled = np.empty((len(latents), len(t)))
    covariances = gmm.covariances_
    for k in np.unique(categories):
        rows = categories == k
        mean, cov = gmm.means_[k], covariances[k]
        gain = np.linalg.solve(cov[np.ix_(s, s)], cov[np.ix_(s, t)])  # Sigma_ss^-1 Sigma_st
        recalled[rows] = mean[t] + (latents[rows] - mean[s]) @ gain
    return recalled


def cross_modal_recall(gmm, blocks, source, target, latents):
    """From modality ``source``'s latents alone, each datum's category and the latent modality
    ``target`` would show: argmax_k p(k | z_source) under the GMM's marginal over the source's
    block, and E[z_target | z_source, k] = mu_t + Sigma_ts Sigma_ss^-1 (z_source - mu_s).

    Parameters
    ----------
    gmm : fitted GibbsGMM over the concatenated latents
    blocks : dict name -> (start, stop) of each modality's columns in what the GMM clustered
    source, target : modality names
    latents : (N, L_source), the source's clustered (active) dimensions

    Returns
    -------
    categories (N,), target latents (N, L_target)
    """
    s, t = np.arange(*blocks[source]), np.arange(*blocks[target])
    categories = np.argmax(_marginal_log_prob(gmm, s, latents), axis=1)
    return categories, conditional_latents(gmm, s, t, latents, categories)


def predict_multimodal(run_dir, sources, *, iteration=None, device="cpu"):
    """Categories of new data from any subset of a multimodal run's modalities, and what the
    missing modalities would show.

    Parameters
    ----------
    run_dir : path of a run of :func:`fit_multimodal`
    sources : dict modality name ("vae_0", ...) -> data source (as ``load_dataset``'s), rows paired
    iteration : int, default=None
        The round to use (the last if None).

    Returns
    -------
    dict with "assignments" (n,), "probabilities" (n, K), "labels" (n,) or None, "metrics"
    (ARI and NMI against the labels, or None) and "recalled" ({missing modality: its decoded
    mean, (n, *shape)}).
    """
    import json

    from .config import VAEConfig
    from .engine import read_settings
    from .gmm import GibbsGMM
    from .metrics import clustering_metrics
    from .modules import encode_views, random_views
    from .vae import encode

    root = Path(run_dir)
    read_settings(root)
    rounds = json.loads((root / "metrics.json").read_text())["rounds"]
    iteration = len(rounds) - 1 if iteration is None else int(iteration)
    if not 0 <= iteration < len(rounds):
        raise ValueError(f"{root} has rounds 0..{len(rounds) - 1}; round {iteration} does not exist.")
    folder = root / f"round_{iteration}"
    history = json.loads((folder / "gmm" / "history.json").read_text())
    blocks, actives = history["blocks"], {k: np.asarray(v, dtype=bool) for k, v in history["active"].items()}
    unknown = sorted(set(sources) - set(blocks))
    if unknown or not sources:
        raise ValueError(f"The run's modalities are {', '.join(blocks)}; give data for one or more of them "
                         f"(got {', '.join(unknown) or 'none'}).")
    with np.load(folder / "gmm" / "gmm.npz") as params:
        gmm = GibbsGMM.from_parameters(params["mu"], params["Lambda"], params["pi"])
    given = [name for name in blocks if name in sources]
    datasets = {name: load_dataset(sources[name]) for name in given}
    counts = {len(d) for d in datasets.values()}
    if len(counts) > 1:
        raise DataError(f"The data given hold {sorted(counts)} rows; paired modalities need the same number.")
    graph = json.loads((root / "graph.json").read_text())
    configs = {module["name"]: module["config"] for module in graph["modules"]}
    latents, columns = [], []
    for name in given:
        vae, shape = load_vae_file(folder / name / "vae.pt")
        if datasets[name].image_shape != shape:
            raise DataError(f"Modality {name} was trained on data of shape {shape} but {sources[name]} holds "
                            f"{datasets[name].image_shape}.")
        config = VAEConfig.from_saved(configs[name])  # the latents as the modality sent them
        views = encode_views(config, random_views(config, shape, vae.likelihood), graph["seed"], device)
        latents.append(encode(vae, torch.as_tensor(datasets[name].flat(), device=device), **views)[:, actives[name]])
        columns.append(np.arange(*blocks[name]))
    latents, columns = np.concatenate(latents, axis=1), np.concatenate(columns)
    probabilities = infer_categories(gmm, columns, latents)
    assignments = probabilities.argmax(axis=1)
    recalled = {}
    for name in blocks:
        if name in sources:
            continue
        vae, shape = load_vae_file(folder / name / "vae.pt")
        target = conditional_latents(gmm, columns, np.arange(*blocks[name]), latents, assignments)
        full = np.zeros((len(target), actives[name].size))
        full[:, actives[name]] = target
        recalled[name] = _decode(vae, full).reshape(-1, *shape)
    labels = next((d.labels for d in datasets.values() if d.labels is not None), None)
    metrics = None
    if labels is not None:
        metrics = {k: v for k, v in clustering_metrics(labels, assignments).items() if k != "accuracy"}
    return {"iteration": iteration, "assignments": assignments, "probabilities": probabilities, "labels": labels,
            "metrics": metrics, "recalled": recalled}


def _decode(vae, latents):
    with torch.no_grad():
        return vae.mean(vae.decode(torch.as_tensor(latents, dtype=torch.float32))).numpy()


def write_multimodal_report(run_dir, n_examples=8):
    """Figures and ``report.md`` of a multimodal run directory: every category decoded in every
    modality (``figures/categories.png``), cross-modal recall, from each modality alone, of what
    the others show (``figures/recall.png``), and the metrics per round. Returns the paths written."""
    import json

    import matplotlib.pyplot as plt

    from .engine import read_settings
    from .gmm import GibbsGMM
    from .metrics import clustering_metrics

    root = Path(run_dir)
    settings = read_settings(root)
    rounds = json.loads((root / "metrics.json").read_text())["rounds"]
    last = root / f"round_{len(rounds) - 1}"
    history = json.loads((last / "gmm" / "history.json").read_text())
    blocks = {name: tuple(block) for name, block in history["blocks"].items()}
    actives = {name: np.asarray(active, dtype=bool) for name, active in history["active"].items()}
    names = list(blocks)

    def full(name, clustered):  # a modality's clustered (active) coordinates as a whole latent, 0 elsewhere
        latent = np.zeros((len(clustered), actives[name].size))
        latent[:, actives[name]] = clustered
        return latent

    with np.load(last / "gmm" / "gmm.npz") as params:
        gmm = GibbsGMM.from_parameters(params["mu"], params["Lambda"], params["pi"])
    vaes = {name: load_vae_file(last / name / "vae.pt") for name in names}
    latents = {name: np.load(last / name / "latents.npy") for name in names}
    labels = np.load(root / "labels.npy") if (root / "labels.npy").exists() else None
    figures = root / "figures"
    figures.mkdir(exist_ok=True)
    order = np.argsort(-gmm.weights_)
    order = order[gmm.weights_[order] > 0]

    fig, axes = plt.subplots(len(names), len(order), figsize=(1.1 * len(order), 1.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        vae, shape = vaes[name]
        images = _decode(vae, full(name, gmm.means_[order][:, slice(*blocks[name])])).reshape(-1, *shape)
        for col, image in enumerate(images):
            axes[row, col].imshow(image, cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_xticks([]), axes[row, col].set_yticks([])
            if col == 0:
                axes[row, col].set_ylabel(name, fontsize=8)
            if row == 0:
                axes[row, col].set_title(str(int(order[col])), fontsize=8)
    fig.suptitle("every category's mean, decoded in every modality", fontsize=9)
    fig.tight_layout()
    categories_png = figures / "categories.png"
    fig.savefig(categories_png, dpi=110)
    plt.close(fig)

    recall_lines, pairs = [], [(s, t) for s in names for t in names if s != t]
    views = None
    if settings.get("sources"):
        config = settings["config"]
        views = dict(zip(names, load_views(settings["sources"], max_samples=config["max_samples"],
                                           seed=config["seed"])[0]))
    rows = np.random.default_rng(0).choice(len(latents[names[0]]), size=min(n_examples, len(latents[names[0]])),
                                           replace=False)
    fig, axes = plt.subplots(3 * len(pairs), len(rows), figsize=(1.1 * len(rows), 1.2 * 3 * len(pairs)),
                             squeeze=False)
    for p, (source, target) in enumerate(pairs):
        categories, recalled = cross_modal_recall(gmm, blocks, source, target, latents[source][:, actives[source]])
        if labels is not None:
            scores = clustering_metrics(labels, categories)
            recall_lines.append(f"| {source} alone | {scores['accuracy']:.4f} | {scores['ari']:.4f} | "
                                f"{scores['nmi']:.4f} |")
        vae, shape = vaes[target]
        decoded = _decode(vae, full(target, recalled[rows])).reshape(-1, *shape)
        shown = [(f"{source} (seen)", None if views is None else views[source].images[rows]),
                 (f"{target} recalled", decoded),
                 (f"{target} (truth)", None if views is None else views[target].images[rows])]
        for r, (title, images) in enumerate(shown):
            for c in range(len(rows)):
                axis = axes[3 * p + r, c]
                axis.set_xticks([]), axis.set_yticks([])
                if images is not None:
                    axis.imshow(images[c], cmap="gray", vmin=0, vmax=1)
                if c == 0:
                    axis.set_ylabel(title, fontsize=7)
    fig.suptitle("cross-modal recall: from one modality alone, the category and what the other shows", fontsize=9)
    fig.tight_layout()
    recall_png = figures / "recall.png"
    fig.savefig(recall_png, dpi=110)
    plt.close(fig)

    columns = [key for key in rounds[0] if key not in ("round", "seconds")]
    lines = [f"# Multimodal categories: {len(names)} modalities, one GMM", "",
             "Modalities: " + ", ".join(f"`{name}` ({data})" for name, data in zip(names, settings["data"])) + ".",
             "Accuracy, ARI and NMI score the GMM's reported assignments against the labels (labels only score).",
             "", "| round | " + " | ".join(columns) + " | seconds |", "|" + "---|" * (len(columns) + 2)]
    for row in rounds:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append(f"| {row['round']} | " + " | ".join(cells) + f" | {row['seconds']:.1f} |")
    lines += ["", "![categories](figures/categories.png)", "",
              "*Each column one category (by weight); each row its mean decoded by that modality's VAE.*", ""]
    if recall_lines:
        lines += ["Categories inferred from one modality alone (its block of the GMM), scored against the labels:", "",
                  "| from | accuracy | ARI | NMI |", "|---|---|---|---|", *recall_lines, ""]
    lines += ["![recall](figures/recall.png)", "",
              "*For each ordered pair: the source modality's images, the target modality recalled from the source "
              "alone (E[z_target | z_source, category] decoded), and the target's true images.*", ""]
    report = root / "report.md"
    atomic_write_bytes(report, "\n".join(lines).encode("utf-8"))
    return [categories_png, recall_png, report]
