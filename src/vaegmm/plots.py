"""Figures: image grids, ELBO curves, clustering per sweep, latent space, the GMM plot.

Every function takes arrays (no run directory, no torch) and writes one PNG; nothing is shown.
Figures are ``matplotlib.figure.Figure`` objects drawn without pyplot, so the caller's backend
and pyplot state are left alone (a notebook shows nothing it did not ask for). No K or latent dimension is hard-coded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "image_grid", "save_image_grid", "plot_elbo", "plot_sweep_metrics", "plot_latent_space",
    "plot_gmm_cluster", "pca_projection", "tsne_embedding", "plot_reconstructions", "plot_evaluation", "plot_naming_game",
    "plot_clusters_found",
]

_FIRST_ROUND_COLOR = "tab:red"  # the reference: red before mutual learning, blue after


def _subplots(nrows=1, ncols=1, *, figsize, squeeze=True):
    """pyplot.subplots without pyplot: a Figure of its own, registered with no backend."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _round_colors(n_rounds):
    """Round 0 red; later rounds shades of blue, darker for later rounds."""
    shades = np.linspace(0.5, 0.95, n_rounds - 1) if n_rounds > 2 else [0.8]
    blues = colormaps.get_cmap("Blues")(shades)
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
    fig, ax = _subplots(figsize=(max(3.0, 0.6 * n_cols), max(3.0, 0.6 * n_rows) + 0.4))
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


def plot_reconstructions(inputs, reconstructions, path, title=None):
    """Input images in the top row and, under them, one row of reconstructions per model.

    Parameters
    ----------
    inputs : ndarray of shape (n, height, width) in [0, 1]
    reconstructions : list of (row label, ndarray of shape (n, height, width)) pairs
    """
    inputs = np.asarray(inputs)
    rows = [("input", inputs)] + [(label, np.asarray(images)) for label, images in reconstructions]
    for label, images in rows:
        if images.shape != inputs.shape:
            raise ValueError(f"Row {label!r} has shape {images.shape}; the inputs have {inputs.shape}.")
    return save_image_grid(path, np.concatenate([images for _, images in rows]), n_cols=len(inputs),
                           title=title, row_labels=[label for label, _ in rows])


def plot_elbo(elbo_per_round, path):
    """ELBO per epoch of every round on one axis; round 0 red, later rounds blue.

    Parameters
    ----------
    elbo_per_round : list of sequences, one per round, of per-datum ELBO per epoch.
    """
    fig, ax = _subplots(figsize=(7.0, 4.6))
    colors = _round_colors(len(elbo_per_round))
    for iteration, (elbo, color) in enumerate(zip(elbo_per_round, colors)):
        label = "round 0 (N(0, I) prior, no mutual learning)" if iteration == 0 else f"round {iteration} (GMM prior)"
        ax.plot(np.arange(1, len(elbo) + 1), elbo, color=color, label=label, lw=1.8)
    ax.set_xlabel("VAE epoch")
    ax.set_ylabel("ELBO per image (nats, higher is better)")
    ax.set_title("ELBO of the VAE in each round")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    n_epochs = max(len(elbo) for elbo in elbo_per_round)
    if n_epochs >= 10:
        # The first epochs span most of the y range; an inset shows the second half, where rounds differ.
        start = n_epochs // 2
        inset = ax.inset_axes([0.40, 0.30, 0.56, 0.40])
        for elbo, color in zip(elbo_per_round, colors):
            if len(elbo) > start:
                inset.plot(np.arange(start + 1, len(elbo) + 1), elbo[start:], color=color, lw=1.6)
        inset.set_title(f"epochs {start + 1}–{n_epochs}", fontsize=9)
        inset.tick_params(labelsize=8)
        inset.grid(alpha=0.3)
    return _save(fig, path)


def plot_sweep_metrics(sweeps_per_round, path, metrics=("accuracy", "ari"), reported=None):
    """Clustering metrics against Gibbs sweep, one line per round and a panel per metric, with
    the state each round reports marked.

    Parameters
    ----------
    sweeps_per_round : list of dicts {metric name: list per sweep}, one per round; a round's
        "reported_sweep" (the most probable sweep, from 0) is marked with a star, else its final
        sweep with a dashed line (runs that report the last draw).
    reported : list of dicts {metric name: value}, default=None
        Each round's reported scores (metrics.json), drawn at its star; None: the trace's value.
    """
    metrics = [m for m in metrics if any(m in s for s in sweeps_per_round)]
    if not metrics:
        raise ValueError("No per-sweep metrics to plot (the data have no labels).")
    fig, axes = _subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
    colors = _round_colors(len(sweeps_per_round))
    for ax, metric in zip(axes[0], metrics):
        plotted, final = [], 0
        for iteration, (sweeps, color) in enumerate(zip(sweeps_per_round, colors)):
            values = sweeps.get(metric)
            if not values:
                continue
            label = "round 0 (no mutual learning)" if iteration == 0 else f"round {iteration}"
            ax.plot(np.arange(1, len(values) + 1), values, color=color, label=label, lw=1.6)
            plotted.append(np.asarray(values, dtype=float))
            if "reported_sweep" in sweeps:
                sweep = int(sweeps["reported_sweep"])
                value = (reported[iteration].get(metric) if reported is not None and iteration < len(reported)
                         else None)
                value = values[sweep] if value is None else value
                ax.plot([sweep + 1], [value], marker="*", ms=13, color=color, mec="black", mew=0.6, ls="none",
                        label=f"round {iteration} reported: most probable state (sweep {sweep + 1})")
                plotted.append(np.asarray([value], dtype=float))
            else:
                final = max(final, len(values))
        if final:  # rounds that report their last draw
            ax.axvline(final, color="0.35", ls="--", lw=1.0, label="reported: final sweep")
        ax.set_xlabel("Gibbs sweep")
        ax.set_ylabel({"accuracy": "accuracy (Hungarian)", "ari": "ARI", "nmi": "NMI"}.get(metric, metric))
        ax.set_ylim(*_metric_limits(np.concatenate(plotted) if plotted else []))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.subplots_adjust(wspace=0.3)
    fig.suptitle("Clustering of the GMM per sweep (labels used for scoring only)")
    return _save(fig, path)


def _metric_limits(values, margin=0.02):
    """y limits around the finite ``values`` with a margin of ``margin`` (or 5% of their range,
    if larger) on each side, so that small differences between sweeps and rounds show;
    (0, 1) when there is nothing finite to plot."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = max(margin, 0.05 * (high - low))
    return low - pad, high + pad


def _text_box(text, fontsize, pad):
    """Width and height in points of a one-line label in a box padded by ``pad`` × fontsize: a
    generous estimate (wider and taller than the glyphs of DejaVu Sans, bold included)."""
    return (0.72 * len(text) + 2 * pad + 0.1) * fontsize, (1.3 + 2 * pad) * fontsize


def _overlaps(box, boxes, gap):
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in boxes)


_MARKER_HALF = 4.0  # half the side, in points, of the square a marker of obstacles= occupies


def _place_labels(ax, anchors, texts, *, fontsize=10, offset=(0.0, 0.0), pad=0.15, obstacles=(), weights=None):
    """Write ``texts[i]`` in a white box near ``anchors[i]`` (data coordinates) so that no two
    labels overlap.

    Each label goes where it prefers if that place is free: centred on its anchor for
    ``offset=(0, 0)``; otherwise its box's corner (or edge) nearest the anchor sits ``offset``
    points from it, e.g. (5, 4): up and to the right. If that place is taken, it goes to the
    nearest free place on rings around it (inside the axes if possible), with a thin line back to
    its anchor. ``obstacles``: points (data coordinates) whose markers the labels must not cover.
    Call after the axes' limits and position are final (after any colorbar).

    Returns
    -------
    list of matplotlib.text.Annotation, one per label, in the order of ``texts``
    """
    anchors = np.asarray(anchors, dtype=float).reshape(len(texts), 2)
    ax.autoscale_view()
    to_points = 72.0 / ax.figure.dpi
    where = ax.transData.transform(anchors) * to_points  # (n, 2), points from the figure's corner
    frame = ax.bbox.extents * to_points  # x0, y0, x1, y1
    taken = [(x - _MARKER_HALF, y - _MARKER_HALF, x + _MARKER_HALF, y + _MARKER_HALF)
             for x, y in ax.transData.transform(np.asarray(obstacles, dtype=float).reshape(-1, 2)) * to_points]
    step = 0.5 * fontsize
    rings = [np.zeros(2)] + [ring * step * np.array([np.cos(angle), np.sin(angle)])
                             for ring in range(1, 41) for angle in np.linspace(0, 2 * np.pi, 8 + 4 * ring,
                                                                                 endpoint=False)]
    artists = []
    for index, text in enumerate(texts):
        size = np.array(_text_box(str(text), fontsize, pad))
        preferred = np.asarray(offset, dtype=float) + np.sign(offset) * size / 2  # the box's centre

        def box_at(shift):
            centre = where[index] + preferred + shift
            return (*(centre - size / 2), *(centre + size / 2))

        def inside(box):
            return frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= box[1] and box[3] <= frame[3]

        free = [shift for shift in rings if not _overlaps(box_at(shift), taken, 2.0)]
        shift = next((c for c in free if inside(box_at(c))), free[0] if free else rings[-1])
        taken.append(box_at(shift))
        kwargs = dict(textcoords="offset points", xytext=tuple(preferred + shift), ha="center", va="center",
                      fontsize=fontsize, fontweight="normal" if weights is None else weights[index],
                      annotation_clip=False, zorder=6,
                      bbox=dict(boxstyle=f"round,pad={pad}", facecolor="white", edgecolor="none", alpha=0.8))
        if np.any(shift):
            kwargs["arrowprops"] = dict(arrowstyle="-", color="0.3", lw=0.6, shrinkA=0, shrinkB=2)
        artists.append(ax.annotate(str(text), anchors[index], **kwargs))
    return artists


def pca_projection(points, n_components=2):
    """Top principal axes of ``points`` of shape (n, L).

    Returns
    -------
    axes : ndarray of shape (n_components, L), one unit vector per row; rows beyond the rank of
        the data (e.g. when L < n_components) are zero, so a 1-D latent plots on a line.
    center : ndarray of shape (L,), the mean of ``points``
    """
    points = np.asarray(points, dtype=np.float64)
    center = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - center, full_matrices=False)
    axes = np.zeros((n_components, points.shape[1]))
    kept = min(n_components, len(vt))
    axes[:kept] = vt[:kept]
    return axes, center


def tsne_embedding(points, *, seed=0, perplexity=30.0, max_iter=500):
    """2-D t-SNE (van der Maaten & Hinton 2008) of ``points`` of shape (n, L): array (n, 2).

    scikit-learn's Barnes-Hut t-SNE, O(n log n) per iteration, PCA initialisation (random for
    L < 2), learning rate "auto", ``max_iter`` iterations (250 of them early exaggeration).
    The perplexity is lowered to (n - 1) / 3 when n is small. Subsample large ``points``
    before calling: 2,000 points take seconds on one core.
    """
    import inspect

    from sklearn.manifold import TSNE

    points = np.asarray(points, dtype=np.float32)
    n_points, latent_dim = points.shape
    if n_points < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n_points}.")
    # scikit-learn renamed n_iter to max_iter in 1.5.
    iterations = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"
    tsne = TSNE(
        n_components=2, perplexity=min(perplexity, (n_points - 1) / 3.0), init="pca" if latent_dim >= 2 else "random",
        learning_rate="auto", random_state=seed, **{iterations: max_iter},
    )
    return tsne.fit_transform(points).astype(np.float64)


def plot_latent_space(panels, path, suptitle="Latent space", max_points=None, seed=0, axis_labels=None):
    """Scatter 2-D embeddings side by side, coloured and marked by a label per point.

    Parameters
    ----------
    panels : list of (title, embedding (n, 2), colour labels (n,), legend title) tuples
    max_points : int, default=None
        Plot a random subset of this size (same subset in every panel).
    axis_labels : list of (x label, y label), one per panel, default=None
    """
    fig, axes = _subplots(1, len(panels), figsize=(5.6 * len(panels) + 1.2, 5.4), squeeze=False)
    n = len(panels[0][1])
    keep = np.arange(n)
    if max_points is not None and n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    size = 10 if len(keep) <= 2500 else 5
    markers = "o^sDv<>pP*Xh"
    # One style per value across panels (a cluster empty in one round keeps the others' colours).
    all_values = list(np.unique(np.concatenate([np.asarray(panel[2])[keep] for panel in panels])))
    cmap = colormaps.get_cmap("tab10" if len(all_values) <= 10 else "tab20")
    for index, (ax, (title, embedding, colours, legend_title)) in enumerate(zip(axes[0], panels)):
        embedding = np.asarray(embedding)[keep]
        colours = np.asarray(colours)[keep]
        values = np.unique(colours)
        # Colour and marker both change with the value, so classes stay apart in greyscale print.
        for value in values:
            i = all_values.index(value)
            mask = colours == value
            ax.scatter(*embedding[mask].T, s=size, alpha=0.6, color=cmap(i % cmap.N),
                       marker=markers[i % len(markers)], label=str(value), linewidths=0)
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        if axis_labels is not None:
            ax.set_xlabel(axis_labels[index][0])
            ax.set_ylabel(axis_labels[index][1])
    # One legend for every panel, outside the axes, with every value seen in any panel.
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], linestyle="none", marker=markers[i % len(markers)], color=cmap(i % cmap.N),
                      markersize=6, alpha=0.8) for i in range(len(all_values))]
    axes[0][-1].legend(handles, [str(v) for v in all_values], title=panels[-1][3], fontsize=9, loc="upper left",
                       bbox_to_anchor=(1.02, 1.0), ncol=1 + len(all_values) // 16, frameon=False)
    fig.suptitle(suptitle, fontsize=12)
    # Each value written at the median of its points, moved aside where labels would overlap.
    for ax, (_, embedding, colours, _) in zip(axes[0], panels):
        embedding, colours = np.asarray(embedding)[keep], np.asarray(colours)[keep]
        values = np.unique(colours)
        _place_labels(ax, [np.median(embedding[colours == value], axis=0) for value in values],
                      [str(value) for value in values], fontsize=11, weights=["bold"] * len(values))
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
        latent dimensions, or two principal axes). A zero second row (a 1-D latent space, see
        :func:`pca_projection`) draws the density along one axis instead.
    axis_labels : (str, str)
    points : ndarray of shape (n, L), optional latents drawn faintly behind
    """
    if not np.any(projection[1]):
        return _plot_gmm_cluster_on_line(means, covariances, cluster, samples, path, projection[0],
                                         axis_labels[0], title, points)
    mean2 = projection @ means[cluster]  # (2,)
    cov2 = projection @ covariances[cluster] @ projection.T  # (2, 2)
    means2 = means @ projection.T  # (K, 2)
    samples2 = samples @ projection.T  # (S, 2)
    spread = 3.5 * np.sqrt(np.diag(cov2))
    stack = [means2, samples2, (mean2 - spread)[None], (mean2 + spread)[None]]
    if points is not None:  # the bulk of the latents (1st to 99th percentile) stays in view
        stack.append(np.percentile(points @ projection.T, [1, 99], axis=0))
    low, high = np.min(np.vstack(stack), axis=0), np.max(np.vstack(stack), axis=0)
    margin = np.maximum(0.08 * (high - low), 0.04 * np.max(high - low)) + 1e-9
    low, high = low - margin, high + margin
    gx, gy = np.meshgrid(np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1) - mean2
    precision2 = np.linalg.inv(cov2)
    density = np.exp(-0.5 * np.einsum("ni,ij,nj->n", grid, precision2, grid))
    density /= 2 * np.pi * np.sqrt(np.linalg.det(cov2))

    fig, ax = _subplots(figsize=(6.4, 6.0))
    if points is not None:
        ax.scatter(*(points @ projection.T).T, s=3, color="0.55", alpha=0.35, label="latents of the data",
                   linewidths=0, zorder=1)
    # Contours from 2% of the peak up: the tails stay unfilled, so the latents show around them.
    peak = density.max()
    contour = ax.contourf(gx, gy, density.reshape(gx.shape), levels=np.linspace(0.02 * peak, peak, 11),
                          cmap="Blues", alpha=0.7, zorder=2)
    fig.colorbar(contour, ax=ax, label=f"density of cluster {cluster} in this plane", shrink=0.85, format="%.2g")
    ax.scatter(*samples2.T, s=16, color="tab:orange", edgecolors="k", linewidths=0.3, zorder=3,
               label=f"{len(samples)} samples from cluster {cluster}")
    ax.scatter(*means2.T, marker="x", s=70, color="k", linewidths=2.0, label="cluster means", zorder=4)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title or f"GMM cluster {cluster}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3, fontsize=9, frameon=False,
              markerscale=1.5)
    _number_means(ax, means2, cluster, offset=(6.5, 5.5))
    return _save(fig, path)


def _number_means(ax, means2, cluster, offset):
    """Each cluster mean's number beside its "x" (the plotted cluster's in bold, placed first),
    never on another number or on an "x"."""
    order = [cluster] + [k for k in range(len(means2)) if k != cluster]
    _place_labels(ax, means2[order], [str(k) for k in order], fontsize=10, offset=offset, obstacles=means2,
                 weights=["bold" if k == cluster else "normal" for k in order])


def _plot_gmm_cluster_on_line(means, covariances, cluster, samples, path, direction, axis_label, title, points):
    """The GMM plot along one direction ``direction`` of shape (L,): the cluster's 1-D density,
    a histogram of the latents, the samples as ticks and every cluster mean as "x"."""
    means1 = means @ direction  # (K,)
    sd = np.sqrt(direction @ covariances[cluster] @ direction)
    samples1 = samples @ direction  # (S,)
    stack = [means1, samples1, [means1[cluster] - 4 * sd, means1[cluster] + 4 * sd]]
    points1 = None if points is None else points @ direction
    if points1 is not None:
        stack.append(np.percentile(points1, [1, 99]))
    low, high = np.min(np.concatenate(stack)), np.max(np.concatenate(stack))
    low, high = low - 0.05 * (high - low) - 1e-9, high + 0.05 * (high - low) + 1e-9
    grid = np.linspace(low, high, 400)
    density = np.exp(-0.5 * ((grid - means1[cluster]) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))

    fig, ax = _subplots(figsize=(6.4, 4.6))
    if points1 is not None:
        ax.hist(points1, bins=60, range=(low, high), density=True, color="0.6", alpha=0.45,
                label="latents of the data (histogram)")
    ax.fill_between(grid, density, color="tab:blue", alpha=0.45, label=f"density of cluster {cluster}")
    base = -0.04 * density.max()
    ax.plot(samples1, np.full_like(samples1, base), "|", color="tab:orange", markersize=14, mew=1.5,
            label=f"{len(samples)} samples from cluster {cluster}")
    ax.scatter(means1, np.full_like(means1, 2 * base), marker="x", s=70, color="k", linewidths=2.0,
               label="cluster means", zorder=4)
    ax.set_xlim(low, high)
    ax.set_xlabel(axis_label)
    ax.set_ylabel("density")
    ax.set_title(title or f"GMM cluster {cluster}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9, frameon=False)
    ax.set_ylim(min(ax.get_ylim()[0], 6 * base), ax.get_ylim()[1])  # room for the numbers under the means
    _number_means(ax, np.column_stack([means1, np.full_like(means1, 2 * base)]), cluster, offset=(0.0, -6.5))
    return _save(fig, path)


def plot_evaluation(summary, per_seed, path):
    """Metrics against the round, mean ± std over seeds, with the "apart" baseline as a band.

    Parameters
    ----------
    summary : dict from :func:`vaegmm.evaluate.summarise`
    per_seed : list of per-seed dicts (their "rounds" are drawn faintly)
    """
    metrics = (("accuracy", "accuracy (Hungarian)"), ("ari", "ARI"), ("nmi", "NMI"))
    n_rounds = len(summary["rounds"])
    rounds = np.arange(n_rounds)
    fig, axes = _subplots(1, len(metrics), figsize=(5.0 * len(metrics), 4.0), squeeze=False)
    for ax, (metric, label) in zip(axes[0], metrics):
        for seed in per_seed:
            ax.plot(rounds, [r[metric] for r in seed["rounds"]], color="tab:blue", alpha=0.25, lw=1)
        means = np.array([r[metric]["mean"] for r in summary["rounds"]])
        stds = np.array([r[metric]["std"] for r in summary["rounds"]])
        ax.errorbar(rounds, means, yerr=stds, color="tab:blue", marker="o", capsize=4, lw=2,
                    label=f"mutual learning ({len(per_seed)} seeds, mean ± std)")
        apart = summary["apart"][metric]
        ax.axhline(apart["mean"], color="tab:gray", ls="--", label="VAE then GMM, apart (as many epochs)")
        ax.axhspan(apart["mean"] - apart["std"], apart["mean"] + apart["std"], color="tab:gray", alpha=0.15)
        ax.set_xticks(rounds)
        ax.set_xlabel("round (0: no mutual learning)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(wspace=0.3)
    fig.suptitle("Clustering per round of mutual learning (final sweep; labels used for scoring only)")
    return _save(fig, path)


def plot_naming_game(rounds, path, agent_names=("agent_a", "agent_b")):
    """The naming game: Cohen's kappa between the agents' signs after every turn (rounds
    separated by dotted lines), and each agent's ARI per round.

    Parameters
    ----------
    rounds : list of dicts with "kappa", "agents" (each with "ari") and "turns" ({"kappa": [...]})
    """
    fig, axes = _subplots(1, 2, figsize=(11.0, 4.0), squeeze=False)
    left, right = axes[0]
    turn = 0
    for record in rounds:
        kappa = record["turns"]["kappa"]
        left.plot(np.arange(turn, turn + len(kappa)) + 1, kappa, color="tab:blue", lw=1.5)
        turn += len(kappa)
        left.axvline(turn + 0.5, color="tab:gray", ls=":", lw=1)
    left.set_xlabel("turn of the game (dotted: end of a round)")
    left.set_ylabel("Cohen's kappa between the agents' signs")
    left.set_ylim(-0.05, 1.05)
    left.grid(alpha=0.3)
    iterations = [record["iteration"] for record in rounds]
    for index, (name, marker) in enumerate(zip(agent_names, ("o", "s"))):
        ari = [record["agents"][index]["ari"] for record in rounds]
        if all(value is not None for value in ari):
            right.plot(iterations, ari, marker=marker, label=name.replace("_", " "))
    right.set_xticks(iterations)
    right.set_xlabel("round")
    right.set_ylabel("ARI of the agent's signs (labels score only)")
    right.grid(alpha=0.3)
    if right.get_legend_handles_labels()[0]:
        right.legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(wspace=0.3)
    return _save(fig, path)


def plot_clusters_found(per_round, path, max_clusters=None):
    """Non-empty clusters after every Gibbs sweep, one line per round (``per_round``: a list of
    per-sweep counts per round); the last half of each chain, where K is estimated, shaded."""
    fig, ax = _subplots(figsize=(7.0, 4.2))
    colors = _round_colors(len(per_round))
    for iteration, (counts, color) in enumerate(zip(per_round, colors)):
        sweeps = np.arange(1, len(counts) + 1)
        ax.step(sweeps, counts, where="post", color=color, label=f"round {iteration}")
    longest = max(len(counts) for counts in per_round)
    ax.axvspan(longest // 2 + 0.5, longest + 0.5, color="tab:gray", alpha=0.12,
               label="last half: K found = its most frequent value")
    if max_clusters is not None:
        ax.axhline(max_clusters, color="tab:gray", ls=":", lw=1, label=f"upper bound ({max_clusters})")
    ax.set_xlabel("Gibbs sweep")
    ax.set_ylabel("non-empty clusters")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Clusters the GMM occupies, per sweep")
    return _save(fig, path)
