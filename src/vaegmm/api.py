"""The reference's Python API (``train_model``, ``decode_from_gmm_param``, ``plot_dist``) and the
figures written at the end of a run, all working on a run directory.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from . import plots
from .config import TrainConfig
from .data import DataError, as_image_dataset, load_dataset
from .mutual import fit_mutual
from .rundir import RunDirectory, RunError

__all__ = [
    "train_model", "decode_from_gmm_param", "plot_dist", "decode_clusters", "plot_reconstructions",
    "write_figures", "largest_cluster",
]

TSNE_MAX_POINTS = 2000  # t-SNE runs on a random subset of this many latents (same subset every round)
FIGURE_SEED = 0  # seed of every random choice made for the figures (subsets, samples, examples)
RECONSTRUCTION_EXAMPLES = 10  # input images in the reconstruction figure


def _dataset_from_loader(all_loader):
    """An ImageDataset of every (image, label) pair of a DataLoader, in order."""
    if not isinstance(all_loader.sampler, SequentialSampler):
        raise ValueError(
            "all_loader must visit the data in order (shuffle=False): the latents it yields are "
            "matched to data points by position."
        )
    images, labels = [], []
    for batch in all_loader:
        if isinstance(batch, (tuple, list)):  # (images, labels) or, from an unlabelled TensorDataset, (images,)
            image, label = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            image, label = batch, None
        images.append(torch.as_tensor(image, dtype=torch.float32))
        labels.append(None if label is None else torch.as_tensor(label).reshape(-1))
    labels = None if any(lab is None for lab in labels) else torch.cat(labels).numpy()
    return as_image_dataset(torch.cat(images).numpy(), labels, "all_loader")


def train_model(mutual_iteration, dir_name, train_loader, all_loader, *, progress=True, figures=True,
                overwrite=False, **options):
    """Train VAE+GMM by mutual learning, as the reference's ``train_model``.

    Parameters
    ----------
    mutual_iteration : int
        Number of rounds in all (round 0 with the N(0, I) prior, then rounds with the GMM's prior).
    dir_name : path
        Run directory to write (see :mod:`vaegmm.rundir`).
    train_loader : DataLoader of (image, label) pairs
        Gives the VAE's batch size and whether to shuffle. Its dataset must be the one
        ``all_loader`` iterates (the per-datum prior is indexed by position in it).
    all_loader : DataLoader of (image, label) pairs, in order (shuffle=False)
        Every data point, used to encode the latents sent to the GMM. Pixels in [0, 1]
        (or 0..255, scaled); images of shape (1, height, width), (height, width) or flat.
    progress : bool
        tqdm bars and a summary line per round.
    figures : bool
        Write the figures of :func:`write_figures` and the report at the end.
    overwrite : bool
        Replace a different run already in ``dir_name`` (refused otherwise).
    **options
        Any :class:`~vaegmm.config.TrainConfig` field (``vae_epochs``, ``gmm_sweeps``,
        ``n_clusters``, ``latent_dim``, ``kl_weight``, ``seed``, ``device``, ...).

    Returns
    -------
    MutualResult
    """
    if not isinstance(train_loader, DataLoader) or not isinstance(all_loader, DataLoader):
        raise TypeError("train_loader and all_loader must be torch.utils.data.DataLoader objects.")
    if len(train_loader.dataset) != len(all_loader.dataset):
        raise ValueError(
            f"train_loader has {len(train_loader.dataset)} data points and all_loader {len(all_loader.dataset)}; "
            "both must wrap the same dataset."
        )
    for reserved in ("mutual_iterations", "batch_size", "data"):
        if reserved in options:
            raise TypeError(f"{reserved} is set by train_model's arguments and loaders, not as an option.")
    dataset = _dataset_from_loader(all_loader)
    config = TrainConfig.from_dict(
        {"data": "dataloader", "mutual_iterations": mutual_iteration, "batch_size": train_loader.batch_size, **options}
    )
    shuffle = isinstance(train_loader.sampler, RandomSampler)
    result = fit_mutual(dataset, config, run_dir=dir_name, shuffle=shuffle, progress=progress,
                        overwrite=overwrite, log=print if progress else None)
    if figures:
        from .report import write_report

        write_figures(dir_name)
        write_report(dir_name)
    return result


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
    gmm = run.load_gmm(iteration)
    _check_cluster(decode_k, gmm, iteration)
    if not (isinstance(sample_num, (int, np.integer)) and sample_num >= 1):
        raise ValueError(f"sample_num must be a positive integer, got {sample_num!r}.")
    latents, _ = gmm.sample(sample_num, component=decode_k, random_state=seed)
    images = _decode(run, iteration, latents, device)
    path = path or run.figures / f"decode_iteration{iteration}_cluster{decode_k}.png"
    plots.save_image_grid(path, images, title=f"Decoded from cluster {decode_k} (iteration {iteration})")
    return images


def decode_clusters(model_dir, iteration, samples_per_cluster=8, *, seed=0, path=None, device="cpu"):
    """One row per cluster: the decoded cluster mean, then decoded samples. Returns the PNG path.

    Each row is labelled with its cluster and the share of the images assigned to it.
    """
    run = RunDirectory(model_dir)
    gmm = run.load_gmm(iteration)
    n_clusters = gmm.means_.shape[0]
    counts = np.bincount(run.load_array(iteration, "assignments"), minlength=n_clusters)
    shares = counts / max(counts.sum(), 1)
    rng = np.random.default_rng(seed)
    rows = [np.vstack([gmm.means_[k][None], gmm.sample(samples_per_cluster, component=k, random_state=rng)[0]])
            for k in range(n_clusters)]
    images = _decode(run, iteration, np.vstack(rows), device)
    path = path or run.figures / f"clusters_iteration{iteration}.png"
    return plots.save_image_grid(
        path, images, n_cols=samples_per_cluster + 1,
        row_labels=[f"k={k} ({100 * share:.0f}%)" for k, share in enumerate(shares)],
        title=f"Iteration {iteration}: decoded mean (left)\nand {samples_per_cluster} samples of each cluster",
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
    rows = [(f"iteration {i}", _reconstruct(run, i, inputs, device)) for i in iterations]
    path = path or run.figures / "reconstructions.png"
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
    gmm = run.load_gmm(load_iteration)
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
    path = path or run.figures / f"gmm_iteration{load_iteration}_cluster{decode_k}.png"
    return plots.plot_gmm_cluster(
        gmm.means_, gmm.covariances_, decode_k, samples, path, projection, axis_labels,
        title=f"GMM cluster {decode_k}, iteration {load_iteration}", points=latents,
    )


def write_figures(run_dir, *, device="cpu"):
    """Every figure of a run into ``run_dir/figures``; returns the list of paths.

    Written: ``elbo.png``, ``sweep_metrics.png`` (with labels), ``latent_pca.png``,
    ``latent_tsne.png``, ``reconstructions.png`` (when the training images can be reloaded
    from config.json: not for ``train_model`` runs), ``clusters_iteration<i>.png`` for the first
    and last rounds, and, for the last round's largest cluster k,
    ``gmm_iteration<i>_cluster<k>.png`` and ``decode_iteration<i>_cluster<k>.png``.
    t-SNE and the other CPU work use at most ``torch.get_num_threads()`` threads.
    """
    from threadpoolctl import threadpool_limits

    run = RunDirectory(run_dir)
    iterations = run.iterations()
    if not iterations:
        raise RunError(f"{run_dir} holds no completed round to plot.")
    first, last = iterations[0], iterations[-1]
    shown = sorted({first, last})
    histories = [run.load_history(i) for i in iterations]
    figures = run.figures
    written = [plots.plot_elbo([h["elbo"] for h in histories], figures / "elbo.png")]
    if any("accuracy" in h["sweeps"] for h in histories):
        written.append(plots.plot_sweep_metrics([h["sweeps"] for h in histories], figures / "sweep_metrics.png"))
    labels = run.load_labels()
    latents = {i: run.load_array(i, "latents") for i in shown}
    n_samples = len(latents[first])
    subset = np.arange(n_samples)
    if n_samples > TSNE_MAX_POINTS:
        subset = np.sort(np.random.default_rng(FIGURE_SEED).choice(n_samples, TSNE_MAX_POINTS, replace=False))
    pca_panels, pca_axes, tsne_panels = [], [], []
    with threadpool_limits(limits=torch.get_num_threads()):
        for iteration in shown:
            colours, legend = ((labels, "true label") if labels is not None
                               else (run.load_array(iteration, "assignments"), "GMM cluster"))
            name = "without mutual learning" if iteration == 0 else "with mutual learning"
            projection, center = plots.pca_projection(latents[iteration])
            embedding = (latents[iteration] - center) @ projection.T  # (N, 2)
            shares = embedding.var(axis=0) / max(latents[iteration].var(axis=0).sum(), 1e-300)
            pca_panels.append((f"iteration {iteration} ({name})", embedding, colours, legend))
            pca_axes.append(tuple(f"principal axis {a + 1} ({100 * share:.0f}% of variance)"
                                  for a, share in enumerate(shares)))
            tsne_panels.append((f"iteration {iteration} ({name})",
                                plots.tsne_embedding(latents[iteration][subset], seed=FIGURE_SEED),
                                colours[subset], legend))
    written.append(plots.plot_latent_space(
        pca_panels, figures / "latent_pca.png", axis_labels=pca_axes,
        suptitle=f"Latent space, top two principal axes of each round (all {n_samples:,} points)"))
    sample_note = (f"random subset of {len(subset):,} of {n_samples:,} points, seed {FIGURE_SEED}"
                   if len(subset) < n_samples else f"all {n_samples:,} points")
    written.append(plots.plot_latent_space(
        tsne_panels, figures / "latent_tsne.png", suptitle=f"Latent space, t-SNE ({sample_note})",
        axis_labels=[("t-SNE 1", "t-SNE 2")] * len(tsne_panels)))
    dataset = _training_images(run, n_samples)
    if dataset is not None:
        written.append(plot_reconstructions(run_dir, dataset.images, shown, labels=dataset.labels, device=device))
    for iteration in shown:
        written.append(decode_clusters(run_dir, iteration, device=device))
    cluster = largest_cluster(run_dir, last)
    written.append(plot_dist(last, cluster, 100, run_dir, dims="pca"))
    decode_from_gmm_param(last, cluster, 16, run_dir, device=device)
    written.append(run.figures / f"decode_iteration{last}_cluster{cluster}.png")
    return written


def _training_images(run, n_samples):
    """The run's training images reloaded from config.json, or None where that cannot be done
    (``train_model`` runs store no images; a data path may have moved or changed)."""
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
    return torch.sigmoid(vae.decode(mean)).cpu().numpy().reshape(len(images), *image_shape)


@torch.no_grad()
def _decode(run, iteration, latents, device):
    vae, image_shape = run.load_vae(iteration, device)
    logits = vae.decode(torch.as_tensor(latents, dtype=torch.float32, device=device))
    return torch.sigmoid(logits).cpu().numpy().reshape(len(latents), *image_shape)
