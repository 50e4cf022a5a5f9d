"""The two modules of a mutual-learning run, each with one job (SERKET's modules, SPEC §2).

- :class:`VAEModule` learns a latent code of the images against the per-datum prior it is sent
  (backward message, a :class:`~vaegmm.messages.PriorMessage`) and sends the latents of the
  clean images (forward message, an (N, L) array).
- :class:`GMMModule` clusters the latents it is sent by Gibbs sampling under a Gauss-Wishart
  prior and sends each datum its prior (:func:`~vaegmm.messages.prior_message`).

Neither sees the other: the loops (:func:`vaegmm.mutual.fit_mutual`,
:func:`vaegmm.naming_game.fit_naming_game`) pass the messages, and own seeds, checkpoints and
the run directory. A module's state to checkpoint is a plain dict (:meth:`VAEModule.state`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .augment import random_affine
from .gibbs import data_scaled_prior
from .gmm import GibbsGMM
from .messages import SweepAverager, prior_message
from .metrics import clustering_metrics
from .vae import VAE, encode, fit_vae

__all__ = ["VAEModule", "GMMModule", "gauss_wishart_prior"]


class VAEModule:
    """The VAE of a run: per round, a fresh VAE (or the last one, ``vae_init="warm"``) trained on
    the images (or random views of them) against the prior it is sent.

    Parameters
    ----------
    config : TrainConfig
        Reads the VAE's fields: architecture, latent_dim, hidden_dims, conv_channels, lr,
        batch_size, vae_init, round0_epochs/vae_epochs, kl_weight/prior_weight, augment_*, send.
    input_dim : int
    image_shape : tuple (height, width)
    device : torch.device
    distributed : vaegmm.distributed.Context, default=None
        With an active context the images given to :meth:`fit` and :meth:`encode` are this
        rank's shard; training is data-parallel (DDP) and :meth:`encode` gathers every rank's
        latents. The generators are then seeded per rank and epoch.

    likelihood : {"bernoulli", "gaussian"}, default="bernoulli"
        The VAE's p(o | x) (:class:`~vaegmm.vae.VAE`): images, or standardised feature vectors.

    Attributes
    ----------
    vae, optimizer : the current VAE and its Adam optimizer (None before the first round)
    elbo, loss : per-epoch per-datum means of the current round
    epoch : epochs of the current round done so far
    """

    def __init__(self, config, input_dim, image_shape, device, distributed=None, likelihood="bernoulli"):
        self.config, self.likelihood = config, likelihood
        self.input_dim, self.image_shape, self.device = input_dim, tuple(image_shape), device
        self.distributed = distributed if distributed is not None and distributed.active else None
        self.vae = self.optimizer = None
        self.augment = None
        if config.augments:
            self.augment = functools.partial(random_affine, image_shape=self.image_shape,
                                             rotation=config.augment_rotation, shift=config.augment_shift,
                                             scale=config.augment_scale)

    def start_round(self, iteration, seed):
        """Seed the round's generators; build a fresh VAE (weights from ``seed``, without touching
        the caller's global RNG) unless a warm-started one carries over."""
        config = self.config
        self.iteration, self.seed = iteration, seed
        self.epochs = config.first_round_epochs if iteration == 0 else config.vae_epochs
        self.kl_weight = config.round_kl_weight(iteration)
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(seed)
        if self.vae is None or config.vae_init == "retrain":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)  # weight initialisation
                self.vae = VAE(self.input_dim, config.latent_dim, config.hidden_dims, config.architecture,
                               self.image_shape, config.conv_channels, self.likelihood).to(self.device)
            self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=config.lr)
        self.elbo, self.loss, self.epoch = [], [], 0

    def state(self, *, weights=True, progress=True):
        """What a checkpoint needs to continue: the weights and optimizer (``weights``) and, mid-round
        (``progress``), the generators and the epochs' histories."""
        state = {"vae": self.vae.state_dict() if weights else None,
                 "optimizer": self.optimizer.state_dict() if weights else None}
        if progress:
            state.update(shuffle_rng=self.shuffle_generator.get_state(), noise_rng=self.noise_generator.get_state(),
                         elbo=list(self.elbo), loss=list(self.loss))
        return state

    def restore(self, state, epoch):
        """Continue from :meth:`state` saved after ``epoch`` epochs of this round."""
        if state["vae"] is not None:
            self.vae.load_state_dict(state["vae"])
            self.optimizer.load_state_dict(state["optimizer"])
        if epoch > 0:
            self.shuffle_generator.set_state(state["shuffle_rng"])
            self.noise_generator.set_state(state["noise_rng"])
            self.elbo, self.loss = list(state["elbo"]), list(state["loss"])
        self.epoch = epoch

    def fit(self, images, prior, *, shuffle=True, on_epoch_end=None, progress=True, desc="VAE"):
        """Train the round's remaining epochs against ``prior``; ``on_epoch_end(epoch)`` after each."""

        def record(epoch, elbo, loss):
            self.elbo.append(elbo)
            self.loss.append(loss)
            self.epoch = epoch
            if on_epoch_end is not None:
                on_epoch_end(epoch)

        fit_vae(
            self.vae, self.optimizer, images, prior, epochs=self.epochs, batch_size=self.config.batch_size,
            kl_weight=self.kl_weight, shuffle=shuffle, generator=self.shuffle_generator,
            noise_generator=self.noise_generator, augment=self.augment, reconstruct=self.config.augment_target,
            start_epoch=self.epoch, on_epoch_end=record, progress=progress, desc=desc,
            distributed=self.distributed, reseed=self._reseed if self.distributed is not None else None,
            contrast_weight=self.config.contrast_weight, contrast_temperature=self.config.contrast_temperature,
        )
        return self

    def _reseed(self, epoch):
        """Distributed: this rank's generators for ``epoch`` from (round seed, rank, epoch)."""
        state = np.random.SeedSequence([self.seed, self.distributed.rank, epoch]).generate_state(2, dtype=np.uint64)
        self.shuffle_generator.manual_seed(int(state[0] >> 1))
        self.noise_generator.manual_seed(int(state[1] >> 1))

    def encode(self, images, n_samples=None):
        """The forward message: latents of the clean images (encoder means, or samples with
        ``send="sample"``), (N, L) float64. Distributed: ``images`` are this rank's shard of the
        ``n_samples`` data, and every rank gets all the latents."""
        latents = encode(self.vae, images, sample=self.config.send == "sample", generator=self.noise_generator)
        if self.distributed is None:
            return latents
        return self.distributed.all_gather_rows(latents, n_samples)


def gauss_wishart_prior(config, latents):
    """The GMM's prior for ``latents``, as GibbsGMM keywords: scaled to the latents ("data",
    :func:`vaegmm.gibbs.data_scaled_prior`: m = their mean and W^-1 = nu Cov(x) / K^(2/L), so that
    E[Lambda_k^-1] is about a K-th of the data's spread in every direction, whatever the latents'
    scale), or the reference's m = 0 and W = ``config.wishart_scale`` * I ("fixed")."""
    if config.gmm_prior == "fixed":
        return {"prior": "fixed", "mean_prior": None, "wishart_scale": config.wishart_scale}
    dof = latents.shape[1] if config.wishart_dof is None else config.wishart_dof
    mean_prior, wishart_scale = data_scaled_prior(latents, config.cluster_slots, dof,
                                                  per_axis=config.gmm_prior == "data-axis")
    return {"prior": config.gmm_prior, "mean_prior": mean_prior, "wishart_scale": wishart_scale}


class GMMModule:
    """The GMM of a run: per round, ``config.gmm_chains`` Gibbs chains on the latents it is sent,
    the one whose reported state (``config.gmm_report``) has the highest joint log posterior kept
    (labels never choose); then the prior message of ``config.prior_from``.

    Parameters
    ----------
    config : TrainConfig
        Reads the GMM's fields: n_clusters, gmm_sweeps, gmm_chains, gmm_init, chain_init, alpha,
        beta, wishart_scale, wishart_dof, gmm_prior, gmm_report, prior_from, prior_sweeps, prior_covariance.
    labels : ndarray of shape (n_samples,) or None
        True labels, only to score each sweep (accuracy, ARI, NMI).
    device : torch.device
        On CUDA the per-datum half of each sweep runs in torch there.
    distributed : vaegmm.distributed.Context, default=None
        With an active context the sweeps are sharded over the ranks (``GibbsGMM(distributed=...)``).

    Attributes (after :meth:`fit`)
    ------------------------------
    gmm : the kept chain's GibbsGMM (its ``labels_``: the reported state's assignments)
    sweeps : its per-sweep records ("log_likelihood", "log_posterior", "reported_sweep", and
        accuracy/ari/nmi with labels)
    """

    def __init__(self, config, labels, device, distributed=None):
        self.config, self.labels, self.device = config, labels, device
        self.distributed = distributed if distributed is not None and distributed.active else None
        self.gmm = self.sweeps = self.latents = self._averager = None

    def fit(self, latents, seed, previous=None, progress=True):
        """Run the chains on ``latents`` from ``numpy.random.SeedSequence`` ``seed``; ``previous``:
        assignments to start every chain from (``chain_init="previous"``), or None."""
        config = self.config
        seeds = [seed] + list(seed.spawn(config.gmm_chains - 1))
        best = None
        for chain_seed in seeds:
            sweeps = {}
            averager = SweepAverager(config.gmm_sweeps - config.prior_sweeps) if config.prior_from == "average" else None
            gmm = self.sampler(latents, random_state=np.random.default_rng(chain_seed),
                               callback=self._callback(sweeps, averager), progress=progress)
            gmm.fit(latents, init_labels=previous)
            sweeps["log_likelihood"] = gmm.log_likelihood_.tolist()
            sweeps["log_posterior"] = gmm.log_posterior_.tolist()
            sweeps["reported_sweep"] = int(gmm.reported_sweep_)
            if config.finds_k:
                sweeps["clusters_found"] = gmm.clusters_found_.tolist()
            score = float(gmm.log_posterior_[gmm.reported_sweep_])
            if best is None or score > best[0]:
                best = (score, gmm, sweeps, averager)
        _, self.gmm, self.sweeps, self._averager = best
        self.latents = latents
        return self

    def sampler(self, latents, *, random_state=None, callback=None, progress=False):
        """An unfitted GibbsGMM with the config's settings and its Gauss-Wishart prior for ``latents``."""
        config = self.config
        return GibbsGMM(
            config.n_clusters, max_components=config.max_clusters, n_sweeps=config.gmm_sweeps, alpha=config.alpha,
            beta=config.beta,
            **gauss_wishart_prior(config, latents), wishart_dof=config.wishart_dof, init=config.gmm_init,
            report=config.gmm_report, n_chains=1,  # fit() runs config.gmm_chains chains itself, one record each
            random_state=random_state, callback=callback, progress=progress,
            device=self.device if self.device.type == "cuda" and self.distributed is None else None,  # torch on CUDA
            distributed=self.distributed,
        )

    def _callback(self, record, averager):
        """GibbsGMM callback: each sweep's accuracy/ARI/NMI into ``record`` (with labels), and the
        sweep's clusters into ``averager`` (for ``prior_from="average"``)."""

        def callback(sweep, assignments, gmm):
            if self.labels is not None:
                for name, value in clustering_metrics(self.labels, assignments).items():
                    record.setdefault(name, []).append(value)
            if averager is not None:
                averager(sweep, assignments, gmm)

        return callback

    def message(self):
        """The backward message: every datum's prior for the next round's VAE."""
        config = self.config
        return prior_message(config.prior_from, config.prior_covariance, self.gmm, self.latents, self.device,
                             averager=self._averager)
