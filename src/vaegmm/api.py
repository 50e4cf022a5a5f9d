"""The reference's Python API: ``train_model``, ``decode_from_gmm_param`` and ``plot_dist``, all
working on a run directory (the last two, with every other figure, live in :mod:`vaegmm.figures`).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from .config import TrainConfig
from .data import as_image_dataset
from .figures import (
    decode_clusters,
    decode_from_gmm_param,
    largest_cluster,
    plot_dist,
    plot_reconstructions,
    write_figures,
)
from .mutual import fit_mutual

__all__ = [
    "train_model", "decode_from_gmm_param", "plot_dist", "decode_clusters", "plot_reconstructions",
    "write_figures", "largest_cluster",
]



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
