"""Figures: image grids, ELBO curves, clustering per sweep, latent space, the GMM plot.

Every function takes arrays (no run directory, no torch) and writes one PNG with the
non-interactive Agg backend; nothing is shown. No K or latent dimension is hard-coded.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "image_grid", "save_image_grid", "plot_elbo", "plot_sweep_metrics", "plot_latent_space",
    "plot_gmm_cluster", "pca_projection",
]

_FIRST_ROUND_COLOR = "tab:red"  # the reference: red before mutual learning, blue after


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _round_colors(n_rounds):
    """Round 0 red; later rounds shades of blue, darker for later rounds."""
    blues = plt.get_cmap("Blues")(np.linspace(0.45, 0.95, max(n_rounds - 1, 1)))
    return [_FIRST_ROUND_COLOR] + [tuple(c) for c in blues[: n_rounds - 1]]


def image_grid(images, n_cols, pad=1):
    """Tile images of shape (n, height, width) into one array, row by row, white padding."""
    images = np.asarray(images)
    n, height, width = images.shape
    n_rows = int(np.ceil(n / n_cols))
    grid = np.ones((n_rows * (height + pad) + pad, n_cols * (width + pad) + pad), dtype=np.float32)
    for index, image in enumerate(images):
        row, col = divmod(index, n_cols)
        top, left = pad + row * (height + pad), pad + col * (width + pad)
        grid[top : top + height, left : left + width] = image
    return grid


def save_image_grid(path, images, n_cols=None, title=None, row_labels=None):
    """Write images (n, height, width) in [0, 1] as a grid PNG (black digits on white)."""
    images = np.asarray(images)
    n_cols = n_cols or int(np.ceil(np.sqrt(len(images))))
    grid = image_grid(1.0 - images, n_cols)  # ink dark on a light page
    n_rows = int(np.ceil(len(images) / n_cols))
    fig, ax = plt.subplots(figsize=(max(3.0, 0.6 * n_cols), max(3.0, 0.6 * n_rows) + 0.4))
    ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    if row_labels is not None:
        height = images.shape[1] + 1
        ax.set_yticks([1 + height * (r + 0.5) for r in range(len(row_labels))])
        ax.set_yticklabels(row_labels)
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_elbo(elbo_per_round, path):
    """ELBO per epoch of every round on one axis; round 0 red, later rounds blue.

    Parameters
    ----------
    elbo_per_round : list of sequences, one per round, of per-datum ELBO per epoch.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for iteration, (elbo, color) in enumerate(zip(elbo_per_round, _round_colors(len(elbo_per_round)))):
        label = "round 0 (N(0, I) prior, no mutual learning)" if iteration == 0 else f"round {iteration} (GMM prior)"
        ax.plot(np.arange(1, len(elbo) + 1), elbo, color=color, label=label, lw=1.8)
    ax.set_xlabel("VAE epoch")
    ax.set_ylabel("ELBO per image (nats, higher is better)")
    ax.set_title("ELBO of the VAE in each round")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_sweep_metrics(sweeps_per_round, path, metrics=("accuracy", "ari")):
    """Clustering metrics against Gibbs sweep, one line per round and a panel per metric.

    Parameters
    ----------
    sweeps_per_round : list of dicts {metric name: list per sweep}, one per round.
    """
    metrics = [m for m in metrics if any(m in s for s in sweeps_per_round)]
    if not metrics:
        raise ValueError("No per-sweep metrics to plot (the data have no labels).")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
    colors = _round_colors(len(sweeps_per_round))
    for ax, metric in zip(axes[0], metrics):
        for iteration, (sweeps, color) in enumerate(zip(sweeps_per_round, colors)):
            values = sweeps.get(metric)
            if values:
                label = "round 0 (no mutual learning)" if iteration == 0 else f"round {iteration}"
                ax.plot(np.arange(1, len(values) + 1), values, color=color, label=label, lw=1.6)
        ax.set_xlabel("Gibbs sweep")
        ax.set_ylabel({"accuracy": "accuracy (Hungarian)", "ari": "ARI", "nmi": "NMI"}.get(metric, metric))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle("Clustering of the GMM per sweep (labels used for scoring only)")
    return _save(fig, path)


def pca_projection(points, n_components=2):
    """Rows of the top principal axes of ``points`` (n, L): array (n_components, L), and the mean."""
    center = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - center, full_matrices=False)
    return vt[:n_components], center


def plot_latent_space(panels, path, suptitle="Latent space", max_points=None, seed=0):
    """Scatter 2-D embeddings side by side, coloured by a label per point.

    Parameters
    ----------
    panels : list of (title, embedding (n, 2), colour labels (n,), legend title) tuples
    max_points : int, default=None
        Plot a random subset of this size (same subset in every panel).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 5.0), squeeze=False)
    n = len(panels[0][1])
    keep = np.arange(n)
    if max_points is not None and n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    for ax, (title, embedding, colours, legend_title) in zip(axes[0], panels):
        colours = np.asarray(colours)[keep]
        values = np.unique(colours)
        cmap = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
        markers = "o^sDv<>pP*X"
        for i, value in enumerate(values):
            mask = colours == value
            ax.scatter(*embedding[keep][mask].T, s=6, alpha=0.7, color=cmap(i % cmap.N),
                       marker=markers[(i // cmap.N) % len(markers)], label=str(value), linewidths=0)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(title=legend_title, markerscale=2.5, fontsize=8, loc="best", ncol=1 + len(values) // 11)
    fig.suptitle(suptitle)
    return _save(fig, path)


def plot_gmm_cluster(means, covariances, cluster, samples, path, projection, axis_labels, title=None, points=None):
    """The reference's GMM plot: one cluster's density, its samples, every cluster mean as "x".

    Parameters
    ----------
    means : ndarray of shape (K, L)
    covariances : ndarray of shape (K, L, L)
    cluster : int
    samples : ndarray of shape (S, L), drawn from cluster ``cluster``
    projection : ndarray of shape (2, L), rows spanning the plotted plane (unit vectors of two
        latent dimensions, or two principal axes)
    axis_labels : (str, str)
    points : ndarray of shape (n, L), optional latents drawn faintly behind
    """
    mean2 = projection @ means[cluster]  # (2,)
    cov2 = projection @ covariances[cluster] @ projection.T  # (2, 2)
    means2 = means @ projection.T  # (K, 2)
    samples2 = samples @ projection.T  # (S, 2)
    spread = 3.5 * np.sqrt(np.diag(cov2))
    stack = [means2, samples2, (mean2 - spread)[None], (mean2 + spread)[None]]
    low, high = np.min(np.vstack(stack), axis=0), np.max(np.vstack(stack), axis=0)
    margin = 0.08 * (high - low) + 1e-9
    low, high = low - margin, high + margin
    gx, gy = np.meshgrid(np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1) - mean2
    precision2 = np.linalg.inv(cov2)
    density = np.exp(-0.5 * np.einsum("ni,ij,nj->n", grid, precision2, grid))
    density /= 2 * np.pi * np.sqrt(np.linalg.det(cov2))

    fig, ax = plt.subplots(figsize=(6.0, 5.2))
    if points is not None:
        ax.scatter(*(points @ projection.T).T, s=2, color="0.75", alpha=0.5, label="latents", linewidths=0)
    contour = ax.contourf(gx, gy, density.reshape(gx.shape), levels=12, cmap="Blues", alpha=0.75)
    fig.colorbar(contour, ax=ax, label=f"density of cluster {cluster}")
    ax.scatter(*samples2.T, s=14, color="tab:orange", edgecolors="k", linewidths=0.3,
               label=f"{len(samples)} samples from cluster {cluster}")
    ax.scatter(*means2.T, marker="x", s=60, color="k", linewidths=1.8, label="cluster means")
    for k, (x, y) in enumerate(means2):
        ax.annotate(str(k), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title or f"GMM cluster {cluster}")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)
