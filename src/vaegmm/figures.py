"""The figures of a run: how each is drawn from a run directory, its file name, title and caption.

One registry, :data:`REGISTRY` (report order), holds every kind of figure `vaegmm train`
writes: its file name (a template such as ``clusters_iteration{iteration}.png``) and its caption
function. :func:`write_figures` draws them; :mod:`vaegmm.report` captions whatever PNGs a run's
``figures/`` holds by matching them against the registry. A new figure: a drawing function in
:mod:`vaegmm.plots` (arrays -> PNG), a call in :func:`write_figures`, and a :class:`FigureKind`
in :data:`REGISTRY` with its caption.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import plots
from .data import DataError, ImageDataset, load_dataset
from .rundir import RunDirectory, RunError
from .threads import limit_threads

__all__ = [
    "FigureKind", "REGISTRY", "RunFacts", "write_figures", "decode_from_gmm_param", "plot_dist", "decode_clusters",
    "plot_reconstructions", "largest_cluster", "ELBO", "SWEEP_METRICS", "LATENT_PCA", "LATENT_TSNE",
    "RECONSTRUCTIONS", "CLUSTERS", "GMM_PLOT", "DECODED", "CLUSTERS_FOUND", "MANIFOLD_EMBEDDING",
]


TSNE_MAX_POINTS = 2000  # t-SNE runs on a random subset of this many latents (same subset every round)
FIGURE_SEED = 0  # seed of every random choice made for the figures (subsets, samples, examples)
RECONSTRUCTION_EXAMPLES = 10  # input images in the reconstruction figure


@dataclass(frozen=True)
class FigureKind:
    """One kind of figure: its file name template (fields ``{iteration}``, ``{cluster}``) and
    ``caption(facts, **fields)`` -> (title, caption), or None for a round or cluster the run lacks."""

    template: str
    caption: Callable

    def file(self, **fields):
        return self.template.format(**fields)

    def match(self, name):
        """The integer fields of a file name of this kind ({"iteration": 1, ...}), or None."""
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>\\d+)", re.escape(self.template))
        found = re.fullmatch(pattern, name)
        return None if found is None else {key: int(value) for key, value in found.groupdict().items()}


class RunFacts:
    """What the captions need to know about a run, read once."""

    def __init__(self, run):
        self.run = run
        self.config = run.load_config()
        self.iterations = run.iterations()
        self.first, self.last = self.iterations[0], self.iterations[-1]
        self.n_samples = len(run.load_array(self.first, "latents"))
        self.has_labels = run.load_labels() is not None
        self.n_clusters = self.config.n_clusters
        self.latent_dim = self.config.latent_dim
        self.manifold = run.has_manifold(self.last)  # the GMM clustered a UMAP embedding of the latents
        self._counts = {}

    def counts(self, iteration):
        """Images assigned to each cluster in a round: array of shape (K,)."""
        if iteration not in self._counts:
            n_clusters = self.run.load_gmm(iteration).means_.shape[0]
            self._counts[iteration] = np.bincount(self.run.load_array(iteration, "assignments"), minlength=n_clusters)
        return self._counts[iteration]

    def round_name(self, iteration):
        return "without mutual learning" if iteration == 0 else "with mutual learning"

    def colouring(self):
        return ("the true label (used for this plot only)" if self.has_labels
                else "the GMM cluster of each round (the data have no labels)")


# -- captions: (title, caption) from what the run holds; None for a round or cluster it lacks --
def _elbo_caption(facts):
    last = facts.last
    later = (f"; rounds 1–{last} (blue, darker for later rounds) train" if last > 1 else
             "; round 1 (blue) trains" if last == 1 else "")
    if later:
        later += (" with each image's prior N(μ_z, Λ_z⁻¹) sent by the GMM, so the curves bound log p(o) "
                  "under different priors")
    return ("ELBO per epoch",
            "The VAE's ELBO per image (nats; higher is better) after each training epoch, one curve per "
            "round on one axis. Round 0 (red) trains with the standard normal prior N(0, I), i.e. without "
            f"mutual learning{later}. The ELBO is computed with KL weight 1"
            + (" (as in training)." if facts.config.kl_weight == 1 else
               f" (training used {facts.config.kl_weight:g}; its loss is in history.json)."))


def _sweeps_caption(facts):
    return ("Clustering per Gibbs sweep",
            "Accuracy (clusters matched to labels by the Hungarian algorithm) and adjusted Rand index of the "
            f"GMM's sampled assignments after each of the {facts.config.gmm_sweeps} Gibbs sweeps, one line per "
            "round; round 0 (red) clusters the latents of the VAE trained without mutual learning. Labels are "
            "used for scoring only. Each y axis spans the values plotted (not 0–1), so small differences show. "
            + ("A star marks each round's reported state, the one the metrics table scores: the parameters of the "
               "sweep with the highest joint log posterior (labels never choose it), each datum in its most "
               "probable cluster under them." if facts.config.gmm_report == "map" else
               "The dashed line marks the final sweep, the state the metrics table reports."))


def _clusters_found_caption(facts):
    config = facts.config
    return ("Clusters found per Gibbs sweep",
            f"With the number of clusters left to the data (--clusters auto, at most {config.max_clusters}): the "
            "number of non-empty clusters after each Gibbs sweep, one line per round (round 0 red). The chain "
            f"starts from k-means with {config.max_clusters} clusters; a sparse Dirichlet prior on the weights "
            "lets the superfluous ones empty. The K a round reports (metrics table) is the most frequent value "
            "over the last half of its sweeps (shaded).")


def _pca_caption(facts):
    first, last, n = facts.first, facts.last, facts.n_samples
    latent_kind = "reparameterised samples" if facts.config.send == "sample" else "encoder means"
    return ("Latent space (PCA)",
            f"The latents sent to the GMM ({latent_kind}) of all {n:,} images in round {first} (left, "
            f"{facts.round_name(first)}) and round {last} (right, {facts.round_name(last)}), projected "
            f"on each round's top two principal axes of the {facts.latent_dim}-dimensional latent space. "
            f"Colour and marker give {facts.colouring()}; each label sits at the median of its points (moved "
            "aside, with a thin line to that median, where labels would overlap).")


def _tsne_caption(facts):
    first, last, n = facts.first, facts.last, facts.n_samples
    shown = min(n, TSNE_MAX_POINTS)
    subset = (f"a random subset of {shown:,} of the {n:,} images (seed {FIGURE_SEED}), the same in both panels"
              if shown < n else f"all {n:,} images")
    perplexity = min(30.0, (shown - 1) / 3.0)
    return ("Latent space (t-SNE)",
            f"The same {facts.latent_dim}-dimensional latents embedded in 2-D by t-SNE (scikit-learn, "
            f"Barnes–Hut, perplexity {perplexity:g}, PCA initialisation, 500 gradient steps) on {subset}: "
            f"round {first} (left, {facts.round_name(first)}) and round {last} (right, "
            f"{facts.round_name(last)}). Colour and marker give {facts.colouring()}; each label sits at the "
            "median of its points (moved aside, with a thin line to it, where labels would overlap). t-SNE "
            "distances between groups are not to scale.")


def _manifold_caption(facts):
    if not facts.manifold:
        return None
    first, last, config = facts.first, facts.last, facts.config
    return ("The manifold's embedding (UMAP)",
            f"What the GMM clusters with --manifold umap: the UMAP embedding ({config.manifold_dim} dimensions, "
            f"{config.manifold_neighbors} neighbours, min_dist {config.manifold_min_dist:g}, random state fixed "
            f"from the round's seed) of the latents of all {facts.n_samples:,} images in round {first} (left, "
            f"{facts.round_name(first)}) and round {last} (right, {facts.round_name(last)}), on its first two "
            f"dimensions. Colour and marker give {facts.colouring()}; each label sits at the median of its points.")


def _manifold_note(facts):
    """With a manifold, what the decoded/plotted Gaussians are (the GMM's own live in the embedding)."""
    if not facts.manifold:
        return ""
    weights = "of their members" if facts.config.prior_from == "last" else "weighted by its responsibilities"
    return (" With --manifold umap the GMM clusters the UMAP embedding; the Gaussians here are its clusters' "
            f"moments of the VAE latents, {weights} (latent_clusters.npz), of which its message to the VAE "
            "is made.")


def _reconstructions_caption(facts):
    first, last, n = facts.first, facts.last, facts.n_samples
    chosen = "one random image of each class in turn" if facts.has_labels else "random images"
    rows = " and ".join(f"round {i}" for i in sorted({first, last}))
    return ("Reconstructions",
            f"Top row: {min(RECONSTRUCTION_EXAMPLES, n)} training images ({chosen}, seed {FIGURE_SEED}); "
            f"below them, their reconstructions by the VAE of {rows}: the decoder's pixel means at the "
            "encoder's mean latent.")


def _round_counts(facts, iteration, cluster=None):
    """Images per cluster of a round, or None if the run lacks the round (or the cluster)."""
    if iteration not in facts.iterations:
        return None
    counts = facts.counts(iteration)
    return None if cluster is not None and cluster >= len(counts) else counts


def _clusters_caption(facts, iteration):
    counts = _round_counts(facts, iteration)
    if counts is None:
        return None
    n_clusters = len(counts)
    return (f"What each cluster learned, round {iteration}",
            f"Round {iteration} ({facts.round_name(iteration)}): one row per cluster k = 0..{n_clusters - 1}, "
            "labelled with the share of the images assigned to it in the last Gibbs sweep; the left image "
            "decodes the cluster mean μ_k, the others decode latents sampled from N(μ_k, Λ_k⁻¹)."
            + _manifold_note(facts))


def _assigned(facts, iteration, cluster, counts):
    assigned = f"{counts[cluster]:,} of {facts.n_samples:,} images assigned"
    if cluster == largest_cluster(facts.run.path, iteration):
        assigned += ", the largest cluster"
    return assigned


def _gmm_caption(facts, iteration, cluster):
    counts = _round_counts(facts, iteration, cluster)
    if counts is None:
        return None
    n_clusters, assigned = len(counts), _assigned(facts, iteration, cluster, counts)
    return (f"The GMM plot, round {iteration}, cluster {cluster}",
            f"Round {iteration}'s GMM (plot_dist): the density of cluster {cluster}'s Gaussian (blue contours; "
            f"{assigned}) in the plane named on the axes (two latent dimensions, or the top two principal "
            "axes of the round's latents as `vaegmm train` draws it), points sampled from it (orange), "
            f"every cluster mean (x, numbered 0..{n_clusters - 1}; a number that would overlap another sits "
            "further out, with a thin line to its x) and the latents (grey)." + _manifold_note(facts))


def _decoded_caption(facts, iteration, cluster):
    counts = _round_counts(facts, iteration, cluster)
    if counts is None:
        return None
    assigned = _assigned(facts, iteration, cluster, counts)
    return (f"Decoded samples, round {iteration}, cluster {cluster}",
            f"A grid of images decoded from latents sampled from cluster {cluster}'s Gaussian "
            f"N(μ_{cluster}, Λ_{cluster}⁻¹) of round {iteration} ({assigned}; decode_from_gmm_param): what the "
            "cluster generates, and how much its members vary." + _manifold_note(facts))


ELBO = FigureKind("elbo.png", _elbo_caption)
SWEEP_METRICS = FigureKind("sweep_metrics.png", _sweeps_caption)
CLUSTERS_FOUND = FigureKind("clusters_found.png", _clusters_found_caption)
LATENT_PCA = FigureKind("latent_pca.png", _pca_caption)
LATENT_TSNE = FigureKind("latent_tsne.png", _tsne_caption)
RECONSTRUCTIONS = FigureKind("reconstructions.png", _reconstructions_caption)
CLUSTERS = FigureKind("clusters_iteration{iteration}.png", _clusters_caption)
GMM_PLOT = FigureKind("gmm_iteration{iteration}_cluster{cluster}.png", _gmm_caption)
DECODED = FigureKind("decode_iteration{iteration}_cluster{cluster}.png", _decoded_caption)
MANIFOLD_EMBEDDING = FigureKind("manifold_embedding.png", _manifold_caption)
REGISTRY = (ELBO, SWEEP_METRICS, CLUSTERS_FOUND, LATENT_PCA, LATENT_TSNE, MANIFOLD_EMBEDDING, RECONSTRUCTIONS,
            CLUSTERS, GMM_PLOT, DECODED)  # report order


# -- drawing ----------------------------------------------------------------------------------
def decode_from_gmm_param(iteration, decode_k, sample_num, model_dir, *, seed=0, path=None, device="cpu"):
    """Decode latents sampled from cluster ``decode_k``'s Gaussian into an image grid.

    Parameters
    ----------
    iteration : int
        Round of the run to load.
    decode_k : int
        Cluster whose N(mu_k, Lambda_k^-1) the latents are drawn from.
    sample_num : int
        Number of images.
    model_dir : path
        Run directory.
    path : path, default=None
        Where to write the PNG; ``model_dir/figures/decode_iteration<i>_cluster<k>.png`` if None.

    Returns
    -------
    images : ndarray of shape (sample_num, height, width) in [0, 1]
    """
    run = RunDirectory(model_dir)
    gmm = run.load_latent_gmm(iteration)  # with a manifold, the clusters' Gaussians in the latent space
    _check_cluster(decode_k, gmm, iteration)
    if not (isinstance(sample_num, (int, np.integer)) and sample_num >= 1):
        raise ValueError(f"sample_num must be a positive integer, got {sample_num!r}.")
    latents, _ = gmm.sample(sample_num, component=decode_k, random_state=seed)
    images = _decode(run, iteration, latents, device)
    path = path or run.figures / DECODED.file(iteration=iteration, cluster=decode_k)
    plots.save_image_grid(path, images, title=f"Decoded from cluster {decode_k} (round {iteration})")
    return images


def decode_clusters(model_dir, iteration, samples_per_cluster=8, *, seed=0, path=None, device="cpu"):
    """One row per cluster: the decoded cluster mean, then decoded samples. Returns the PNG path.

    Each row is labelled with its cluster and the share of the images assigned to it.
    """
    run = RunDirectory(model_dir)
    gmm = run.load_latent_gmm(iteration)  # with a manifold, the clusters' Gaussians in the latent space
    n_clusters = gmm.means_.shape[0]
    counts = np.bincount(run.load_array(iteration, "assignments"), minlength=n_clusters)
    shares = counts / max(counts.sum(), 1)
    rng = np.random.default_rng(seed)
    rows = [np.vstack([gmm.means_[k][None], gmm.sample(samples_per_cluster, component=k, random_state=rng)[0]])
            for k in range(n_clusters)]
    images = _decode(run, iteration, np.vstack(rows), device)
    path = path or run.figures / CLUSTERS.file(iteration=iteration)
    return plots.save_image_grid(
        path, images, n_cols=samples_per_cluster + 1,
        row_labels=[f"k={k} ({100 * share:.0f}%)" for k, share in enumerate(shares)],
        title=f"Round {iteration}: decoded mean (left)\nand {samples_per_cluster} samples of each cluster",
    )


def plot_reconstructions(model_dir, images, iterations=None, *, labels=None, n_examples=RECONSTRUCTION_EXAMPLES,
                         seed=FIGURE_SEED, path=None, device="cpu"):
    """A few images beside their reconstructions by the VAE of each given round.

    Parameters
    ----------
    model_dir : path
        Run directory.
    images : ndarray of shape (n_samples, height, width)
        The run's training images, in the order of its latents.
    iterations : list of int, default=None
        Rounds whose VAE reconstructs; the first and last rounds if None.
    labels : ndarray of shape (n_samples,), default=None
        With labels, the examples cover every class in turn (one random image per class).

    Returns
    -------
    path of the PNG written (``model_dir/figures/reconstructions.png`` by default)
    """
    run = RunDirectory(model_dir)
    available = run.iterations()
    if not available:
        raise RunError(f"{model_dir} holds no completed round to reconstruct with.")
    iterations = sorted({available[0], available[-1]}) if iterations is None else list(iterations)
    images = np.asarray(images, dtype=np.float32)
    chosen = _example_indices(len(images), labels, n_examples, seed)
    inputs = images[chosen]
    rows = [(f"round {i}", _reconstruct(run, i, inputs, device)) for i in iterations]
    path = path or run.figures / RECONSTRUCTIONS.file()
    return plots.plot_reconstructions(
        inputs, rows, path, title="Inputs (top) and their reconstructions by the VAE of each round",
    )


def largest_cluster(model_dir, iteration):
    """The cluster to which the most images were assigned in a round (ties: the lowest k)."""
    run = RunDirectory(model_dir)
    n_clusters = run.load_gmm(iteration).means_.shape[0]
    return int(np.argmax(np.bincount(run.load_array(iteration, "assignments"), minlength=n_clusters)))


def _example_indices(n_samples, labels, n_examples, seed):
    """Indices of ``n_examples`` data: one random datum of each class in turn, or random ones."""
    rng = np.random.default_rng(seed)
    n_examples = min(n_examples, n_samples)
    if labels is None:
        return np.sort(rng.choice(n_samples, n_examples, replace=False))
    labels = np.asarray(labels)
    members = [rng.permutation(np.flatnonzero(labels == value)) for value in np.unique(labels)]
    chosen = []
    for rank in range(max(len(m) for m in members)):
        chosen.extend(m[rank] for m in members if rank < len(m))
        if len(chosen) >= n_examples:
            break
    return np.array(chosen[:n_examples])


def plot_dist(load_iteration, decode_k, sample_num, dir_name, *, dims=(0, 1), seed=0, path=None):
    """The reference's GMM plot: cluster ``decode_k``'s density in two latent dimensions, points
    sampled from it, and every cluster mean marked "x".

    Parameters
    ----------
    dims : (int, int) or "pca"
        Two latent dimensions to show, or "pca" for the top two principal axes of the latents.

    Returns
    -------
    path of the PNG written (``dir_name/figures/gmm_iteration<i>_cluster<k>.png`` by default)
    """
    run = RunDirectory(dir_name)
    gmm = run.load_latent_gmm(load_iteration)  # with a manifold, the clusters' Gaussians in the latent space
    _check_cluster(decode_k, gmm, load_iteration)
    latents = run.load_array(load_iteration, "latents")
    latent_dim = gmm.means_.shape[1]
    if isinstance(dims, str) and dims == "pca":
        projection, _ = plots.pca_projection(latents)
        axis_labels = ("principal axis 1", "principal axis 2")
    else:
        dims = tuple(int(d) for d in dims)
        if len(dims) != 2 or len(set(dims)) != 2 or not all(0 <= d < latent_dim for d in dims):
            raise ValueError(f"dims must be two different latent dimensions in [0, {latent_dim - 1}], or 'pca'; got {dims}.")
        projection = np.eye(latent_dim)[list(dims)]
        axis_labels = (f"latent dimension {dims[0]}", f"latent dimension {dims[1]}")
    samples, _ = gmm.sample(sample_num, component=decode_k, random_state=seed)
    path = path or run.figures / GMM_PLOT.file(iteration=load_iteration, cluster=decode_k)
    return plots.plot_gmm_cluster(
        gmm.means_, gmm.covariances_, decode_k, samples, path, projection, axis_labels,
        title=f"GMM cluster {decode_k}, round {load_iteration}", points=latents,
    )


def write_figures(run_dir, *, device="cpu"):
    """Every figure of a run into ``run_dir/figures``; returns the list of paths.

    Written: ``elbo.png``, ``sweep_metrics.png`` (with labels), ``latent_pca.png``,
    ``latent_tsne.png``, ``manifold_embedding.png`` (with manifold = umap), ``reconstructions.png``
    (when the training images can be reloaded from config.json: not for ``train_model`` runs),
    ``clusters_iteration<i>.png`` for the first
    and last rounds, and, for the last round's largest cluster k,
    ``gmm_iteration<i>_cluster<k>.png`` and ``decode_iteration<i>_cluster<k>.png``.
    t-SNE and the other CPU work use at most the package's thread limit (:mod:`vaegmm.threads`).
    """
    run = RunDirectory(run_dir)
    iterations = run.iterations()
    if not iterations:
        raise RunError(f"{run_dir} holds no completed round to plot.")
    first, last = iterations[0], iterations[-1]
    shown = sorted({first, last})
    histories = [run.load_history(i) for i in iterations]
    figures = run.figures
    written = [plots.plot_elbo([h["elbo"] for h in histories], figures / ELBO.file())]
    if any("accuracy" in h["sweeps"] for h in histories):
        rows = {row["iteration"]: row for row in run.load_metrics()}
        written.append(plots.plot_sweep_metrics([h["sweeps"] for h in histories], figures / SWEEP_METRICS.file(),
                                                reported=[rows.get(i, {}) for i in iterations]))
    if any("clusters_found" in h["sweeps"] for h in histories):
        written.append(plots.plot_clusters_found([h["sweeps"]["clusters_found"] for h in histories],
                                                 figures / CLUSTERS_FOUND.file(), run.load_config().max_clusters))
    labels = run.load_labels()
    latents = {i: run.load_array(i, "latents") for i in shown}
    n_samples = len(latents[first])
    subset = np.arange(n_samples)
    if n_samples > TSNE_MAX_POINTS:
        subset = np.sort(np.random.default_rng(FIGURE_SEED).choice(n_samples, TSNE_MAX_POINTS, replace=False))
    pca_panels, pca_axes, tsne_panels = [], [], []
    with limit_threads():
        for iteration in shown:
            colours, legend = ((labels, "true label") if labels is not None
                               else (run.load_array(iteration, "assignments"), "GMM cluster"))
            name = "without mutual learning" if iteration == 0 else "with mutual learning"
            projection, center = plots.pca_projection(latents[iteration])
            embedding = (latents[iteration] - center) @ projection.T  # (N, 2)
            shares = embedding.var(axis=0) / max(latents[iteration].var(axis=0).sum(), 1e-300)
            pca_panels.append((f"round {iteration} ({name})", embedding, colours, legend))
            pca_axes.append(tuple(f"principal axis {a + 1} ({100 * share:.0f}% of variance)"
                                  for a, share in enumerate(shares)))
            tsne_panels.append((f"round {iteration} ({name})",
                                plots.tsne_embedding(latents[iteration][subset], seed=FIGURE_SEED),
                                colours[subset], legend))
    written.append(plots.plot_latent_space(
        pca_panels, figures / LATENT_PCA.file(), axis_labels=pca_axes,
        suptitle=f"Latent space, top two principal axes of each round (all {n_samples:,} points)"))
    sample_note = (f"random subset of {len(subset):,} of {n_samples:,} points, seed {FIGURE_SEED}"
                   if len(subset) < n_samples else f"all {n_samples:,} points")
    written.append(plots.plot_latent_space(
        tsne_panels, figures / LATENT_TSNE.file(), suptitle=f"Latent space, t-SNE ({sample_note})",
        axis_labels=[("t-SNE 1", "t-SNE 2")] * len(tsne_panels)))
    if run.has_manifold(last):
        written.append(_plot_manifold(run, shown, labels))
    dataset = _training_images(run, n_samples)
    if dataset is not None:
        written.append(plot_reconstructions(run_dir, dataset.images, shown, labels=dataset.labels, device=device))
    for iteration in shown:
        written.append(decode_clusters(run_dir, iteration, device=device))
    cluster = largest_cluster(run_dir, last)
    written.append(plot_dist(last, cluster, 100, run_dir, dims="pca"))
    decode_from_gmm_param(last, cluster, 16, run_dir, device=device)
    written.append(run.figures / DECODED.file(iteration=last, cluster=cluster))
    return written


def _plot_manifold(run, shown, labels):
    """``manifold_embedding.png``: the first two UMAP dimensions of the given rounds' embeddings,
    coloured by true label (or, without labels, by each round's cluster)."""
    panels = []
    for iteration in shown:
        embedding = run.load_embedding(iteration)
        if embedding is None:
            continue
        colours, legend = ((labels, "true label") if labels is not None
                           else (run.load_array(iteration, "assignments"), "GMM cluster"))
        name = "without mutual learning" if iteration == 0 else "with mutual learning"
        panels.append((f"round {iteration} ({name})", embedding[:, :2], colours, legend))
    n_samples = len(panels[0][1])
    return plots.plot_latent_space(
        panels, run.figures / MANIFOLD_EMBEDDING.file(), axis_labels=[("UMAP 1", "UMAP 2")] * len(panels),
        suptitle=f"The manifold's UMAP embedding, what the GMM clusters (all {n_samples:,} points)")


def _training_images(run, n_samples):
    """The run's training images: those it kept (``images.npy``), else reloaded from config.json;
    None where that cannot be done (``train_model`` runs store no images; a data path may have
    moved or changed)."""
    kept = run.load_images()
    if kept is not None:
        return ImageDataset(kept, run.load_labels(), "images.npy") if len(kept) == n_samples else None
    config = run.load_config()
    if config.data == "dataloader":
        return None
    try:
        dataset = load_dataset(config.data, max_samples=config.max_samples, seed=config.seed)
    except (DataError, OSError):
        return None
    return dataset if len(dataset) == n_samples else None


def _check_cluster(cluster, gmm, iteration):
    n_clusters = gmm.means_.shape[0]
    if not (isinstance(cluster, (int, np.integer)) and 0 <= cluster < n_clusters):
        raise ValueError(f"Cluster {cluster} does not exist in iteration {iteration}; clusters are 0..{n_clusters - 1}.")


@torch.no_grad()
def _reconstruct(run, iteration, images, device):
    """Decoder mean (Bernoulli probabilities) at the encoder mean of each image: (n, height, width)."""
    vae, image_shape = run.load_vae(iteration, device)
    mean, _ = vae.encode(torch.as_tensor(images, dtype=torch.float32, device=device))
    return vae.mean(vae.decode(mean)).cpu().numpy().reshape(len(images), *image_shape)


@torch.no_grad()
def _decode(run, iteration, latents, device):
    vae, image_shape = run.load_vae(iteration, device)
    logits = vae.decode(torch.as_tensor(latents, dtype=torch.float32, device=device))
    return vae.mean(logits).cpu().numpy().reshape(len(latents), *image_shape)
