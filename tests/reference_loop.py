"""FROZEN: ``vaegmm/mutual.py`` as it was before the module seam (HEAD 05d8246), imports
made absolute. tests/test_modules.py checks that today's loop reproduces this one bit for bit;
do not edit it (except to follow a rename of the primitives it imports).

Mutual learning between the VAE and the GMM (SPEC §2): the loop that passes messages.

One round = a VAE step, then a GMM step:

1. Train a fresh VAE (or fine-tune the last one) on
   E_q[log p(o_n | x_n)] - kl_weight * KL(q(x_n | o_n) || N(mu_hat_n, Sigma_hat_n)),
   where round 0 uses N(0, I) and later rounds use the GMM's message for datum n (step 4).
   The prior is a per-datum array indexed by each minibatch's data indices, so it follows
   every datum through shuffling. With augmentation, the encoder sees a random view of each
   image (against that image's prior) and the decoder reconstructs the view or the clean image.
2. VAE -> GMM: encode every clean image (encoder mean, or a reparameterised sample).
3. GMM step: ``gmm_sweeps`` blocked Gibbs sweeps.
4. GMM -> VAE: for each datum, the Gaussian moment-matched to its responsibility-weighted
   mixture sum_k r_nk N(mu_k, Lambda_k^-1) under the last sweep's parameters (the default),
   (mu_{z_n}, Lambda_{z_n}^-1) of its last-sweep assignment (the reference), or the Gaussian
   moment-matched to its clusters over the last sweeps (``prior_from``).

Neither module sees the other's internals: the VAE gets arrays of prior means/(co)variances,
the GMM gets an array of latents.
"""

from __future__ import annotations

import functools
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vaegmm.augment import random_affine
from vaegmm.config import TrainConfig
from vaegmm.data import ImageDataset
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import clustering_metrics
from vaegmm.rundir import RunDirectory
from vaegmm.vae import VAE, kl_to_diagonal_prior, kl_to_full_prior, kl_to_mixture_prior

__all__ = ["PriorMessage", "RoundResult", "MutualResult", "fit_mutual", "fit_vae", "encode", "resolve_device",
           "chain_prior", "responsibility_moments"]

_ENCODE_BATCH = 4096


@dataclass
class PriorMessage:
    """The GMM's message to the VAE: the prior of every datum's latent.

    Two forms:

    - a **Gaussian per datum** (``log_weights`` None): ``mean`` (N, L) and ``var`` (N, L)
      (diagonal) or ``precision`` (N, L, L); the VAE's KL is to datum n's own Gaussian;
    - the **mixture** (``log_weights`` given): ``log_weights`` (K,), ``mean`` (K, L) and ``var``
      (K, L) or ``precision`` (K, L, L), shared by every datum; the VAE's KL is
      :func:`~vaegmm.vae.kl_to_mixture_prior`, which recomputes each datum's responsibilities
      from its current latent in every batch (VaDE's closed form).

    Attributes
    ----------
    mean : Tensor of shape (N, L) or (K, L)
    var : Tensor of shape (N, L) or (K, L), diagonal variances, or None
    precision : Tensor of shape (N, L, L) or (K, L, L), or None
    log_weights : Tensor of shape (K,), or None
    """

    mean: torch.Tensor
    var: Optional[torch.Tensor] = None
    precision: Optional[torch.Tensor] = None
    log_weights: Optional[torch.Tensor] = None

    @classmethod
    def standard_normal(cls, n_samples, latent_dim, device):
        return cls(torch.zeros(n_samples, latent_dim, device=device), var=torch.ones(n_samples, latent_dim, device=device))

    @classmethod
    def from_gmm(cls, gmm, assignments, covariance, device):
        """Each datum's cluster mean and covariance (its diagonal) or precision (full)."""
        mean = torch.as_tensor(gmm.means_[assignments], dtype=torch.float32, device=device)
        if covariance == "full":
            precision = torch.as_tensor(gmm.precisions_, dtype=torch.float32, device=device)
            return cls(mean, precision=precision[torch.as_tensor(assignments, device=device)])
        variances = np.diagonal(gmm.covariances_, axis1=1, axis2=2)  # (K, L): diag of Lambda^-1
        return cls(mean, var=torch.as_tensor(variances[assignments], dtype=torch.float32, device=device))

    @classmethod
    def mixture(cls, gmm, covariance, device):
        """The GMM itself (its weights, means and covariances' diagonals or precisions) as
        the prior shared by every datum."""
        as_tensor = lambda array: torch.as_tensor(np.array(array), dtype=torch.float32, device=device)  # noqa: E731
        log_weights = as_tensor(np.log(np.maximum(gmm.weights_, np.finfo(np.float64).tiny)))
        if covariance == "full":
            return cls(as_tensor(gmm.means_), precision=as_tensor(gmm.precisions_), log_weights=log_weights)
        variances = np.diagonal(gmm.covariances_, axis1=1, axis2=2)
        return cls(as_tensor(gmm.means_), var=as_tensor(variances), log_weights=log_weights)

    @classmethod
    def from_moments(cls, mean, covariance_matrices, covariance, device):
        """Per-datum Gaussians from means (N, L) and covariance matrices (N, L, L): their
        diagonal (``covariance="diag"``) or their inverse (``"full"``)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device)
        if covariance == "full":
            precision = np.linalg.inv(covariance_matrices)
            precision = 0.5 * (precision + precision.transpose(0, 2, 1))
            return cls(mean_t, precision=torch.as_tensor(precision, dtype=torch.float32, device=device))
        variances = np.diagonal(covariance_matrices, axis1=1, axis2=2).copy()
        return cls(mean_t, var=torch.as_tensor(variances, dtype=torch.float32, device=device))

    @property
    def is_mixture(self):
        return self.log_weights is not None

    def to_numpy(self):
        """{"mean", "var" or "precision", and "log_weights" for the mixture} as NumPy arrays
        (what a run directory saves)."""
        arrays = {"mean": self.mean}
        arrays.update({"var": self.var} if self.var is not None else {"precision": self.precision})
        if self.log_weights is not None:
            arrays["log_weights"] = self.log_weights
        return {key: value.detach().cpu().numpy() for key, value in arrays.items()}

    @classmethod
    def from_numpy(cls, arrays, device):
        return cls(**{key: torch.as_tensor(value, dtype=torch.float32, device=device) for key, value in arrays.items()})

    def batch(self, indices):
        """The per-datum prior of the data at ``indices``: (mean, var, precision), one of the
        last two None."""
        if self.is_mixture:
            raise ValueError("A mixture prior is shared by every datum; use kl() instead of batch().")
        return (
            self.mean[indices],
            None if self.var is None else self.var[indices],
            None if self.precision is None else self.precision[indices],
        )

    def kl(self, mean, logvar, indices):
        """The KL term of the data at ``indices`` whose posteriors are N(mean, diag e^logvar): (B,)."""
        if self.is_mixture:
            return kl_to_mixture_prior(mean, logvar, self.log_weights, self.mean, self.var, self.precision)
        prior_mean, prior_var, prior_precision = self.batch(indices)
        if prior_precision is not None:
            return kl_to_full_prior(mean, logvar, prior_mean, prior_precision)
        return kl_to_diagonal_prior(mean, logvar, prior_mean, prior_var)


@dataclass
class RoundResult:
    iteration: int
    elbo: List[float]  # mean ELBO per datum, per epoch (KL weight 1)
    loss: List[float]  # training loss per datum, per epoch (KL weight as configured)
    gmm: GibbsGMM
    latents: np.ndarray  # (N, L)
    assignments: np.ndarray  # (N,)
    sweeps: dict  # per-sweep lists: log_likelihood, and accuracy/ari/nmi when labels exist
    metrics: dict  # final-sweep accuracy/ari/nmi (None without labels), elbo, seconds


@dataclass
class MutualResult:
    config: TrainConfig
    vae: VAE
    rounds: List[RoundResult] = field(default_factory=list)

    @property
    def gmm(self):
        return self.rounds[-1].gmm

    def metrics(self):
        return [r.metrics for r in self.rounds]


def resolve_device(name):
    """torch.device for "auto", "cpu", "cuda" or "cuda:N"; a clear error if CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available here; use --device cpu.")
    return device


def fit_vae(vae, optimizer, images, prior, *, epochs, batch_size, kl_weight=1.0, shuffle=True,
            generator=None, noise_generator=None, augment=None, reconstruct="view", start_epoch=0, on_epoch_end=None,
            progress=True, desc="VAE"):
    """Train ``vae`` for epochs ``start_epoch + 1 .. epochs`` against a per-datum prior.

    Parameters
    ----------
    images : Tensor of shape (n_samples, input_dim) on the VAE's device
    prior : PriorMessage, per datum (n_samples rows) or the shared mixture
    generator : torch.Generator (CPU) for shuffling; noise_generator (on the images' device) for
        the reparameterisation and the augmentation
    augment : callable, default=None
        ``augment(batch, generator=noise_generator)`` returns a random view of every image of
        the batch (e.g. :func:`vaegmm.augment.random_affine`); its KL is to the view's datum's
        prior. None: the images themselves.
    reconstruct : {"view", "clean"}, default="view"
        With ``augment``, what the decoder reconstructs from a view's latent: the view itself,
        or the clean image (a denoising VAE, Im et al. 2017, with the random view as the
        corruption: the latent learns what is common to all views of an image).
    start_epoch : int, default=0
        Epochs already done (when resuming).
    on_epoch_end : callable, default=None
        Called as ``on_epoch_end(epoch, elbo, loss)`` after each epoch (``epoch`` counts the
        epochs done), only once the epoch's loss is known to be finite.

    Returns
    -------
    elbo, loss : lists with one per-datum mean per epoch trained here

    Raises
    ------
    FloatingPointError
        If an epoch's loss is NaN or infinite (before ``on_epoch_end`` sees it).
    """
    n_samples = images.shape[0]
    elbo_per_epoch, loss_per_epoch = [], []
    bar = tqdm(range(start_epoch, epochs), desc=desc, unit="epoch", disable=not progress, leave=False,
               initial=start_epoch, total=epochs)
    vae.train()
    for epoch in bar:
        order = torch.randperm(n_samples, generator=generator) if shuffle else torch.arange(n_samples)
        order = order.to(images.device)
        elbo_sum = loss_sum = 0.0
        for indices in order.split(batch_size):
            batch = target = images[indices]
            if augment is not None:  # a random view of each datum, trained against its datum's prior
                batch = augment(batch, generator=noise_generator)
                target = target if reconstruct == "clean" else batch
            logits, mean, logvar = vae(batch, noise_generator)
            reconstruction = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(dim=-1)
            kl = prior.kl(mean, logvar, indices)  # each datum's own prior, or the shared mixture
            # Both terms summed over pixels/latent dims, averaged over the batch: one scale.
            loss = (reconstruction + kl_weight * kl).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                elbo_sum -= float((reconstruction + kl).sum())
                loss_sum += float(loss) * indices.numel()
        if not (np.isfinite(elbo_sum) and np.isfinite(loss_sum)):
            raise FloatingPointError(
                f"{desc}: the VAE loss became NaN or infinite in epoch {epoch + 1}; lower the learning "
                "rate (--lr) or check the data. The last checkpoint is kept."
            )
        elbo_per_epoch.append(elbo_sum / n_samples)
        loss_per_epoch.append(loss_sum / n_samples)
        bar.set_postfix(elbo=f"{elbo_per_epoch[-1]:.2f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, elbo_per_epoch[-1], loss_per_epoch[-1])
    return elbo_per_epoch, loss_per_epoch


@torch.no_grad()
def encode(vae, images, *, sample=False, generator=None):
    """Latents of every image, in order: encoder means, or reparameterised samples.

    Parameters
    ----------
    images : Tensor of shape (n_samples, input_dim)

    Returns
    -------
    latents : ndarray of shape (n_samples, latent_dim), float64
    """
    vae.eval()
    chunks = []
    for batch in images.split(_ENCODE_BATCH):
        mean, logvar = vae.encode(batch)
        chunks.append(vae.reparameterize(mean, logvar, generator) if sample else mean)
    return torch.cat(chunks).double().cpu().numpy()


def _round_seeds(seed, n_rounds):
    """Independent (torch seed, numpy SeedSequence) per round from one integer seed."""
    children = np.random.SeedSequence(seed).spawn(n_rounds)
    return [(int(child.generate_state(1, dtype=np.uint64)[0] >> 1), child) for child in children]


def _sweep_recorder(labels, record):
    """GibbsGMM callback that appends each sweep's accuracy, ARI and NMI to ``record``."""

    def callback(sweep, assignments, gmm):
        if labels is not None:
            for name, value in clustering_metrics(labels, assignments).items():
                record.setdefault(name, []).append(value)

    return callback


class _SweepAverager:
    """GibbsGMM callback that averages, over the sweeps from ``first`` on, each datum's
    first and second moments under its assigned cluster: E[mu_z] and E[Sigma_z + mu_z mu_z^T]."""

    def __init__(self, first):
        self.first = first
        self.count = 0
        self.first_moment = self.second_moment = None

    def __call__(self, sweep, labels, gmm):
        if sweep < self.first:
            return
        means, covariances = gmm.means_, gmm.covariances_
        second = covariances + np.einsum("ki,kj->kij", means, means)
        if self.first_moment is None:
            self.first_moment = np.zeros((len(labels), means.shape[1]))
            self.second_moment = np.zeros((len(labels), means.shape[1], means.shape[1]))
        self.first_moment += means[labels]
        self.second_moment += second[labels]
        self.count += 1

    def moments(self):
        """Per-datum mean (N, L) and covariance (N, L, L) of the averaged prior."""
        mean = self.first_moment / self.count
        covariance = self.second_moment / self.count - np.einsum("ni,nj->nij", mean, mean)
        return mean, 0.5 * (covariance + covariance.transpose(0, 2, 1))


def responsibility_moments(gmm, latents):
    """Mean (N, L) and covariance (N, L, L) of each datum's mixture sum_k r_nk N(mu_k, Sigma_k),
    r_nk = p(z_n = k | x_n) under the GMM's parameters."""
    resp = gmm.predict_proba(latents)  # (N, K)
    mean = resp @ gmm.means_
    offsets = gmm.means_[None, :, :] - mean[:, None, :]  # (N, K, L)
    covariance = np.einsum("nk,kij->nij", resp, gmm.covariances_) + np.einsum("nk,nki,nkj->nij", resp, offsets, offsets)
    return mean, 0.5 * (covariance + covariance.transpose(0, 2, 1))


def chain_prior(config, gmm, latents, averager, device):
    """The GMM's message to the next round, as ``config.prior_from`` asks (``averager``: the
    chain's _SweepAverager, used by "average" only)."""
    if config.prior_from == "mixture":
        return PriorMessage.mixture(gmm, config.prior_covariance, device)
    if config.prior_from == "last":
        return PriorMessage.from_gmm(gmm, gmm.labels_, config.prior_covariance, device)
    if config.prior_from == "average":
        mean, covariance = averager.moments()
    else:
        mean, covariance = responsibility_moments(gmm, latents)
    return PriorMessage.from_moments(mean, covariance, config.prior_covariance, device)


def _combine(*callbacks):
    def callback(sweep, labels, gmm):
        for function in callbacks:
            function(sweep, labels, gmm)

    return callback


def gauss_wishart_prior(config, latents):
    """The GMM's prior hyperparameters ``mean_prior`` and ``wishart_scale`` for ``latents``:
    ``config.wishart_scale * I`` and m = 0 ("fixed"), or scaled to the latents ("data", Fraley &
    Raftery 2007, "Bayesian regularization for normal mixture estimation"): m = their mean and
    W^-1 = nu Cov(x) / K^(2/L), so that E[Lambda_k^-1] is about a K-th of the data's spread in
    every direction, whatever the latents' scale."""
    if config.gmm_prior_used == "fixed":
        return {"prior": "fixed", "mean_prior": None, "wishart_scale": config.wishart_scale}
    n_features = latents.shape[1]
    dof = n_features if config.wishart_dof is None else config.wishart_dof
    covariance = np.atleast_2d(np.cov(latents, rowvar=False)) / config.n_clusters ** (2.0 / n_features)
    covariance += 1e-6 * np.trace(covariance) / n_features * np.eye(n_features)
    return {"prior": "data", "mean_prior": latents.mean(axis=0), "wishart_scale": np.linalg.inv(dof * covariance)}


def _gmm_step(config, latents, labels, previous, numpy_seed, progress, device):
    """Run ``config.gmm_chains`` Gibbs chains on the latents and keep the one whose reported
    state has the highest joint log posterior (labels never choose). (Updated with GibbsGMM's
    contract: ``report`` and the chain's score; the loop itself is as it was.)

    Returns
    -------
    gmm : GibbsGMM of the kept chain
    sweeps : its per-sweep records ("log_likelihood", and accuracy/ari/nmi with labels)
    prior : PriorMessage for the next round, formed as ``config.prior_from`` asks
    """
    seeds = [numpy_seed] + list(numpy_seed.spawn(config.gmm_chains - 1))
    prior = gauss_wishart_prior(config, latents)
    best = None
    for seed in seeds:
        sweeps = {}
        averager = _SweepAverager(config.gmm_sweeps - config.prior_sweeps) if config.prior_from == "average" else None
        callbacks = [_sweep_recorder(labels, sweeps)] + ([averager] if averager is not None else [])
        gmm = GibbsGMM(
            config.n_clusters, n_sweeps=config.gmm_sweeps, alpha=config.alpha, beta=config.beta, **prior,
            wishart_dof=config.wishart_dof, init=config.gmm_init, report=config.gmm_report,
            random_state=np.random.default_rng(seed), callback=_combine(*callbacks),
            progress=progress, device=device if device.type == "cuda" else None,  # torch sampler on CUDA
            n_chains=1,
        ).fit(latents, init_labels=previous)
        sweeps["log_likelihood"] = gmm.log_likelihood_.tolist()
        sweeps["log_posterior"] = gmm.log_posterior_.tolist()
        sweeps["reported_sweep"] = int(gmm.reported_sweep_)
        score = float(gmm.log_posterior_[gmm.reported_sweep_])
        if best is None or score > best[0]:
            best = (score, gmm, sweeps, averager)
    _, gmm, sweeps, averager = best
    return gmm, sweeps, chain_prior(config, gmm, latents, averager, device)


def fit_mutual(
    dataset: ImageDataset,
    config: TrainConfig,
    *,
    run_dir=None,
    shuffle=True,
    progress=True,
    overwrite=False,
    resume=False,
    checkpoint_every=10,
    log: Optional[Callable[[str], None]] = print,
):
    """Run ``config.mutual_iterations`` rounds of VAE + GMM mutual learning on ``dataset``.

    Parameters
    ----------
    dataset : ImageDataset
    config : TrainConfig
    run_dir : path, default=None
        Where to write the run directory (see :mod:`vaegmm.rundir`); nothing is written if None.
        A directory holding a different run is refused unless ``overwrite``, which deletes
        that run's files first.
    shuffle : bool
        Shuffle the VAE's minibatches every epoch.
    progress : bool
        tqdm bars over epochs and sweeps.
    resume : bool
        Continue the interrupted run in ``run_dir`` from its checkpoint; ``config`` must equal
        the run's saved config. On CPU the result equals that of an uninterrupted run.
    checkpoint_every : int
        Write ``run_dir/checkpoint.pt`` every this many VAE epochs (and after the last epoch
        and every round). A Ctrl-C (SIGINT) is honoured at the next epoch end, after a checkpoint.
    log : callable or None
        Receives the one-line summary of each round.

    Returns
    -------
    MutualResult
    """
    if len(dataset) < config.n_clusters:
        raise ValueError(
            f"The data hold {len(dataset)} images but {config.n_clusters} clusters were asked for; "
            "use fewer clusters (--clusters) or more data."
        )
    if config.latent_dim >= dataset.flat().shape[1]:
        raise ValueError(
            f"latent_dim = {config.latent_dim} is not below the {dataset.flat().shape[1]} pixels of an image; "
            "an autoencoder needs a smaller latent dimension (--latent-dim)."
        )
    device = resolve_device(config.device)
    images = torch.as_tensor(dataset.flat(), device=device)  # (N, D)
    labels = dataset.labels
    n_samples, input_dim = images.shape
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 1):
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
    run = RunDirectory(run_dir) if run_dir is not None else None
    checkpoint = None
    if resume:
        if run is None:
            raise ValueError("resume=True needs the run_dir of the run to continue.")
        checkpoint = run.load_checkpoint(config)  # refuses a different config; None: nothing done yet
    elif run is not None:
        run.start(config, overwrite=overwrite)
    if run is not None and labels is not None:
        run.save_labels(labels)

    result = MutualResult(config=config, vae=None)
    prior = PriorMessage.standard_normal(n_samples, config.latent_dim, device)
    vae = optimizer = None
    first_round = 0 if checkpoint is None else checkpoint["iteration"]
    if first_round > 0:  # completed rounds come from the run directory
        result.rounds = [_load_round(run, i) for i in range(first_round)]
        last = result.rounds[-1]
        saved = run.load_prior(first_round - 1)
        prior = (PriorMessage.from_numpy(saved, device) if saved is not None
                 else PriorMessage.from_gmm(last.gmm, last.assignments, config.prior_covariance, device))
        result.vae, _ = run.load_vae(first_round - 1, device)
    if checkpoint is not None and log is not None:
        where = ("all rounds are done" if first_round == config.mutual_iterations
                 else f"round {first_round}, epoch {checkpoint['epoch']}")
        log(f"resuming {run.path}: {where}")

    seeds = _round_seeds(config.seed, config.mutual_iterations)
    augment = None
    if config.augments:
        augment = functools.partial(random_affine, image_shape=dataset.image_shape,
                                    rotation=config.augment_rotation, shift=config.augment_shift,
                                    scale=config.augment_scale)
    with _deferred_interrupt() as interrupt:
        for iteration in range(first_round, config.mutual_iterations):
            torch_seed, numpy_seed = seeds[iteration]
            epochs = config.first_round_epochs if iteration == 0 else config.round_epochs
            started = time.perf_counter()
            torch.manual_seed(torch_seed)  # weight initialisation
            shuffle_generator = torch.Generator().manual_seed(torch_seed)
            noise_generator = torch.Generator(device=device).manual_seed(torch_seed)
            if vae is None or config.vae_init_used == "retrain":
                vae = VAE(input_dim, config.latent_dim, config.hidden_dims, config.architecture,
                          dataset.image_shape, config.conv_channels).to(device)
                optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)
            elbo, loss, start_epoch = [], [], 0
            if checkpoint is not None and checkpoint["iteration"] == iteration:
                start_epoch = _restore(checkpoint, vae, optimizer, shuffle_generator, noise_generator, elbo, loss)
                started -= checkpoint["vae_seconds"]
                checkpoint = None

            def save_checkpoint(epoch):
                run.save_checkpoint({
                    "config": config.to_dict(), "iteration": iteration, "epoch": epoch,
                    "vae": vae.state_dict(), "optimizer": optimizer.state_dict(),
                    "shuffle_rng": shuffle_generator.get_state(), "noise_rng": noise_generator.get_state(),
                    "elbo": list(elbo), "loss": list(loss), "vae_seconds": time.perf_counter() - started,
                })

            def on_epoch_end(epoch, epoch_elbo, epoch_loss):
                elbo.append(epoch_elbo)
                loss.append(epoch_loss)
                if run is not None and (epoch % checkpoint_every == 0 or epoch == epochs or interrupt.requested):
                    save_checkpoint(epoch)
                if interrupt.requested:
                    raise KeyboardInterrupt

            # 1. VAE step against this round's prior (on random views of the images, if asked).
            fit_vae(
                vae, optimizer, images, prior, epochs=epochs, batch_size=config.batch_size,
                kl_weight=config.round_kl_weight(iteration), shuffle=shuffle, generator=shuffle_generator,
                noise_generator=noise_generator, augment=augment, reconstruct=config.augment_target,
                start_epoch=start_epoch, on_epoch_end=on_epoch_end, progress=progress, desc=f"round {iteration} VAE",
            )
            vae_seconds = time.perf_counter() - started

            # 2. VAE -> GMM.
            latents = encode(vae, images, sample=config.send == "sample", generator=noise_generator)

            # 3. GMM step; 4. GMM -> VAE: the prior of the next round.
            previous = result.rounds[-1].assignments if config.chain_init == "previous" and result.rounds else None
            gmm, sweeps, prior = _gmm_step(config, latents, labels, previous, numpy_seed, progress, device)
            assignments = gmm.labels_

            seconds = time.perf_counter() - started
            final = clustering_metrics(labels, assignments) if labels is not None else dict.fromkeys(("accuracy", "ari", "nmi"))
            metrics = {"iteration": iteration, **final, "elbo": elbo[-1], "seconds": seconds,
                       "vae_seconds": vae_seconds, "gmm_seconds": seconds - vae_seconds}
            round_result = RoundResult(iteration, elbo, loss, gmm, latents, assignments, sweeps, metrics)
            result.rounds.append(round_result)
            result.vae = vae
            if run is not None:
                run.save_round(
                    iteration, vae=vae, optimizer=optimizer, image_shape=dataset.image_shape, gmm=gmm,
                    latents=latents, assignments=assignments, prior=prior.to_numpy(),
                    history={"elbo": elbo, "loss": loss, "sweeps": sweeps},
                )
                run.save_metrics(result.metrics())
                # The next round starts from its own seeds; only a warm-started VAE carries over.
                warm = config.vae_init_used == "warm"
                run.save_checkpoint({
                    "config": config.to_dict(), "iteration": iteration + 1, "epoch": 0,
                    "vae": vae.state_dict() if warm else None, "optimizer": optimizer.state_dict() if warm else None,
                    "elbo": [], "loss": [], "vae_seconds": 0.0,
                })
            if log is not None:
                log(format_round(metrics))
            if interrupt.requested:
                raise KeyboardInterrupt
    return result


def _restore(checkpoint, vae, optimizer, shuffle_generator, noise_generator, elbo, loss):
    """Load a mid-round checkpoint into the round's objects; returns the epochs already done."""
    if checkpoint["vae"] is not None:
        vae.load_state_dict(checkpoint["vae"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint["epoch"] > 0:
        shuffle_generator.set_state(checkpoint["shuffle_rng"])
        noise_generator.set_state(checkpoint["noise_rng"])
        elbo.extend(checkpoint["elbo"])
        loss.extend(checkpoint["loss"])
    return checkpoint["epoch"]


def _load_round(run, iteration):
    """A completed round of a run directory as a RoundResult."""
    history = run.load_history(iteration)
    gmm = run.load_gmm(iteration)
    gmm.labels_ = run.load_array(iteration, "assignments")
    return RoundResult(
        iteration, history["elbo"], history["loss"], gmm, run.load_array(iteration, "latents"),
        gmm.labels_, history["sweeps"], run.load_metrics()[iteration],
    )


class _deferred_interrupt:
    """Context in which a first Ctrl-C (SIGINT) only sets ``requested``; the loop then saves a
    checkpoint at the next epoch end and raises KeyboardInterrupt. A second Ctrl-C interrupts
    at once. Outside the main thread it does nothing."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C interrupts at once

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def format_round(metrics):
    """One line: round, ELBO, accuracy, ARI, NMI, time."""
    scores = "  ".join(
        f"{name} {metrics[name]:.4f}" if metrics[name] is not None else f"{name} n/a"
        for name in ("accuracy", "ari", "nmi")
    )
    return f"round {metrics['iteration']}: ELBO {metrics['elbo']:.2f}  {scores}  ({metrics['seconds']:.1f} s)"
