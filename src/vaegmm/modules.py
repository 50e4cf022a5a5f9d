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
import time

import numpy as np
import torch

from .augment import random_affine
from .config import GMMConfig, VAEConfig
from .engine import Addressed, Module
from .gibbs import data_scaled_prior
from .gmm import GibbsGMM, chain_score
from .messages import PriorMessage, SweepAverager, prior_message
from .metrics import clustering_metrics
from .rundir import save_vae, write_file, write_json
from .vae import VAE, encode, fit_vae

__all__ = ["VAEModule", "GMMModule", "gauss_wishart_prior", "random_views", "encode_views", "VAEStep", "JointGMM",
           "GMMStep"]

VIEWS_STREAM = 0x76696577  # seeds the random views of encode_views, apart from the training's streams


class VAEModule:
    """The VAE of a run: per round, a fresh VAE (or the last one, ``vae_init="warm"``) trained on
    the images (or random views of them) against the prior it is sent.

    Parameters
    ----------
    config : VAEConfig or TrainConfig (its :meth:`~vaegmm.config.TrainConfig.vae_config`)
        The VAE's fields: architecture, latent_dim, hidden_dims, conv_channels, lr, batch_size,
        vae_init, round0_epochs/vae_epochs, kl_weight/prior_weight, augment_*, send, encode_views.
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
        self.config, self.likelihood = VAEConfig.of(config), likelihood
        self.input_dim, self.image_shape, self.device = input_dim, tuple(image_shape), device
        self.distributed = distributed if distributed is not None and distributed.active else None
        self.vae = self.optimizer = None
        self.augment = random_views(self.config, self.image_shape, likelihood)

    def start_round(self, iteration, seed):
        """Seed the round's generators; build a fresh VAE (weights from ``seed``, without touching
        the caller's global RNG) unless a warm-started one carries over."""
        config = self.config
        self.iteration, self.seed = iteration, seed
        self.epochs = config.first_round_epochs if iteration == 0 else config.round_epochs
        self.kl_weight = config.round_kl_weight(iteration)
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(seed)
        if self.vae is None or config.vae_init_used == "retrain":
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
        ``send="sample"``; with ``encode_views``, averaged with those of random views of them),
        (N, L) float64. Distributed: ``images`` are this rank's shard of the ``n_samples`` data, and
        every rank gets all the latents."""
        rank = 0 if self.distributed is None else self.distributed.rank
        latents = encode(self.vae, images, sample=self.config.send == "sample", generator=self.noise_generator,
                         **encode_views(self.config, self.augment, self.seed, self.device, rank))
        if self.distributed is None:
            return latents
        return self.distributed.all_gather_rows(latents, n_samples)


def random_views(config, image_shape, likelihood="bernoulli"):
    """``augment(images, generator=...)``: one random view of every image within ``config``'s
    augment_* ranges (:func:`~vaegmm.augment.random_affine`); None without them, or for feature
    vectors (``likelihood`` "gaussian"), which have no views."""
    if not config.augments or likelihood != "bernoulli":
        return None
    return functools.partial(random_affine, image_shape=tuple(image_shape), rotation=config.augment_rotation,
                             shift=config.augment_shift, scale=config.augment_scale)


def encode_views(config, augment, seed, device, rank=0):
    """The keywords of :func:`~vaegmm.vae.encode` for ``config.encode_views``: how many random views
    (``augment``) each image's latent averages, drawn by their own generator seeded from (``seed``,
    ``rank``), apart from the training's streams."""
    views = config.encode_views if augment is not None else 0
    if not views:
        return {}
    state = np.random.SeedSequence([int(seed), rank, VIEWS_STREAM]).generate_state(1, dtype=np.uint64)
    return {"views": views, "augment": augment,
            "view_generator": torch.Generator(device=device).manual_seed(int(state[0] >> 1))}


def gauss_wishart_prior(config, latents, blocks=None):
    """The GMM's prior for ``latents``, as GibbsGMM keywords: scaled to the latents ("data",
    :func:`vaegmm.gibbs.data_scaled_prior`: m = their mean and W^-1 = nu Cov(x) / K^(2/L), so that
    E[Lambda_k^-1] is about a K-th of the data's spread in every direction, whatever the latents'
    scale), or the reference's m = 0 and W = ``config.wishart_scale`` * I ("fixed"). ``blocks``: the
    sizes of a block-diagonal covariance's blocks (``GibbsGMM(covariance_blocks=...)``), each block
    scaled to its own features."""
    if config.gmm_prior_used == "fixed":
        return {"prior": "fixed", "mean_prior": None, "wishart_scale": config.wishart_scale}
    dof = latents.shape[1] if config.wishart_dof is None else config.wishart_dof
    mean_prior, wishart_scale = data_scaled_prior(latents, config.cluster_slots, dof,
                                                  per_axis=config.gmm_prior_used == "data-axis", blocks=blocks)
    return {"prior": config.gmm_prior_used, "mean_prior": mean_prior, "wishart_scale": wishart_scale}


class GMMModule:
    """The GMM of a run: per round, ``config.gmm_chains`` Gibbs chains on the latents it is sent,
    the one whose reported state (``config.gmm_report``) scores highest by ``config.gmm_keep``
    kept (joint or collapsed log posterior; labels never choose); then the prior message of
    ``config.prior_from``.

    Parameters
    ----------
    config : GMMConfig or TrainConfig (its :meth:`~vaegmm.config.TrainConfig.gmm_config`)
        The GMM's fields: n_clusters, gmm_sweeps, gmm_chains, gmm_keep, gmm_init, chain_init, alpha, beta,
        wishart_scale, wishart_dof, gmm_prior, gmm_report, prior_from, prior_sweeps, prior_covariance.
    labels : ndarray of shape (n_samples,) or None
        True labels, only to score each sweep (accuracy, ARI, NMI); the engine's systems pass None
        and ``record_assignments=True``, and score the recorded sweeps in an observer.
    device : torch.device
        On CUDA the per-datum half of each sweep runs in torch there.
    distributed : vaegmm.distributed.Context, default=None
        With an active context the sweeps are sharded over the ranks (``GibbsGMM(distributed=...)``).

    Attributes (after :meth:`fit`)
    ------------------------------
    gmm : the kept chain's GibbsGMM (its ``labels_``: the reported state's assignments)
    sweeps : its per-sweep records ("log_likelihood", "log_posterior", "reported_sweep", and
        accuracy/ari/nmi with labels)
    sweep_assignments : with ``record_assignments``, its assignments after every sweep, (S, N)
    """

    def __init__(self, config, labels, device, distributed=None, record_assignments=False):
        self.config, self.labels, self.device = GMMConfig.of(config), labels, device
        self.distributed = distributed if distributed is not None and distributed.active else None
        self.record_assignments = record_assignments
        self.gmm = self.sweeps = self.latents = self._averager = self.sweep_assignments = None

    def fit(self, latents, seed, previous=None, progress=True, blocks=None):
        """Run the chains on ``latents`` from ``numpy.random.SeedSequence`` ``seed``; ``previous``:
        assignments to start every chain from (``chain_init="previous"``), or None; ``blocks``: the
        sizes of block-diagonal covariances' blocks (``GibbsGMM(covariance_blocks=...)``), or None."""
        config = self.config
        seeds = [seed] + list(seed.spawn(config.gmm_chains - 1))
        best = None
        for chain_seed in seeds:
            sweeps, recorded = {}, [] if self.record_assignments else None
            averager = SweepAverager(config.gmm_sweeps - config.prior_sweeps) if config.prior_from == "average" else None
            gmm = self.sampler(latents, random_state=np.random.default_rng(chain_seed),
                               callback=self._callback(sweeps, averager, recorded), progress=progress, blocks=blocks)
            gmm.fit(latents, init_labels=previous)
            sweeps["log_likelihood"] = gmm.log_likelihood_.tolist()
            sweeps["log_posterior"] = gmm.log_posterior_.tolist()
            sweeps["reported_sweep"] = int(gmm.reported_sweep_)
            if config.finds_k:
                sweeps["clusters_found"] = gmm.clusters_found_.tolist()
            score = chain_score(gmm, config.gmm_keep)
            if best is None or score > best[0]:
                best = (score, gmm, sweeps, averager, recorded)
        _, self.gmm, self.sweeps, self._averager, recorded = best
        self.gmm.set_params(callback=None)  # fitted: the closure is not needed, and the GMM is kept (pickled)
        self.sweep_assignments = None if recorded is None else np.stack(recorded)
        self.latents = latents
        return self

    def sampler(self, latents, *, random_state=None, callback=None, progress=False, blocks=None):
        """An unfitted GibbsGMM with the config's settings and its Gauss-Wishart prior for ``latents``
        (``blocks``: block-diagonal covariances of these sizes)."""
        config = self.config
        return GibbsGMM(
            config.n_clusters, max_components=config.max_clusters, n_sweeps=config.gmm_sweeps, alpha=config.alpha,
            beta=config.beta,
            **gauss_wishart_prior(config, latents, blocks), wishart_dof=config.wishart_dof,
            covariance_blocks=blocks, init=config.gmm_init,
            report=config.gmm_report, n_chains=1,  # fit() runs config.gmm_chains chains itself, one record each
            random_state=random_state, callback=callback, progress=progress,
            device=self.device if self.device.type == "cuda" and self.distributed is None else None,  # torch on CUDA
            distributed=self.distributed,
        )

    def _callback(self, record, averager, recorded=None):
        """GibbsGMM callback: each sweep's accuracy/ARI/NMI into ``record`` (with labels), its
        assignments into ``recorded`` (a list, when asked: to be scored outside the module), and
        the sweep's clusters into ``averager`` (for ``prior_from="average"``)."""
        dtype = np.int16 if self.config.cluster_slots < 2 ** 15 else np.int32

        def callback(sweep, assignments, gmm):
            if recorded is not None:
                recorded.append(np.asarray(assignments, dtype=dtype))
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


class VAEStep(Module):
    """A VAE as a module of the engine (:mod:`vaegmm.engine`): each round it trains on its images
    against the prior it is sent (``"prior"``, a :class:`~vaegmm.messages.PriorMessage`; N(0, I)
    when none has come yet) and sends ``"latents"`` (N, L) of the clean images, ``"elbo"`` (the
    last epoch's), ``"history"`` (per-epoch ELBO and loss) and ``"seconds"`` (its training time).

    Parameters
    ----------
    name : str
    dataset : ImageDataset (or, distributed, a MappedImageDataset)
        Its modality's images (its ``likelihood`` chooses the VAE's p(o | x)).
    config : VAEConfig, or a TrainConfig (its VAE's fields: :meth:`~vaegmm.config.TrainConfig.vae_config`)
        Its VAE's settings (architecture, latent_dim, epochs, augmentation, ...); graph.json records them.
    device : torch.device or str, default=cpu
    distributed : vaegmm.distributed.Context, default=None
        Data-parallel training on this rank's shard of the images (see :class:`VAEModule`).
    shuffle : bool, default=True
        Shuffle the minibatches every epoch.
    checkpoint_every : int, default=None
        Save the run inside the step every this many epochs (and after the last, and on a stop),
        so that a resumed run continues mid-round; None: only between steps.
    """

    def __init__(self, name, dataset, config, device=None, *, distributed=None, shuffle=True, checkpoint_every=None):
        super().__init__(name)
        config = VAEConfig.of(config)
        self.dataset, self.config, self.shuffle, self.checkpoint_every = dataset, config, shuffle, checkpoint_every
        self.device = torch.device("cpu" if device is None else device)
        self.distributed = distributed if distributed is not None and distributed.active else None
        self.n_samples = len(dataset)
        start, stop = (0, self.n_samples) if self.distributed is None else self.distributed.shard(self.n_samples)
        self.images = torch.as_tensor(dataset.rows(start, stop), device=self.device)  # distributed: this rank's shard
        self.vae = VAEModule(config, int(np.prod(dataset.image_shape)), dataset.image_shape, self.device,
                             distributed=self.distributed, likelihood=getattr(dataset, "likelihood", "bernoulli"))

    def step(self, inbox, context):
        prior = inbox.get("prior")
        if prior is None:
            prior = PriorMessage.standard_normal(self.n_samples, self.config.latent_dim, self.device)
        prior = prior.to(self.device)  # distributed, a rank-0 module's message comes on rank 0's device
        self.vae.start_round(context.round, context.torch_seed)
        started = time.perf_counter()
        if context.resume is not None:  # the run stopped inside this step: continue from its epoch
            self.vae.restore(context.resume["vae"], context.resume["epoch"])
            started -= context.resume["seconds"]
        every = self.checkpoint_every

        def on_epoch_end(epoch):
            stop = context.stop_asked()
            if every is not None and (epoch % every == 0 or epoch == self.vae.epochs or stop):
                context.checkpoint({"epoch": epoch, "vae": self.vae.state(),
                                    "seconds": time.perf_counter() - started})
            if stop:
                raise KeyboardInterrupt

        self.vae.fit(self.images, prior, shuffle=self.shuffle, on_epoch_end=on_epoch_end, progress=context.progress,
                     desc=f"round {context.round} {self.name}")
        seconds = time.perf_counter() - started
        return {"latents": self.vae.encode(self.images, self.n_samples), "elbo": float(self.vae.elbo[-1]),
                "history": {"elbo": list(self.vae.elbo), "loss": list(self.vae.loss)}, "seconds": seconds}

    def state(self):
        if self.vae.vae is None:
            return {}
        return {"vae": {k: v.detach().cpu() for k, v in self.vae.vae.state_dict().items()},
                "optimizer": self.vae.optimizer.state_dict()}

    def restore(self, state):
        if not state:
            return
        self.vae.start_round(0, 0)  # builds the network; its weights come from the state
        self.vae.vae.load_state_dict(state["vae"])
        self.vae.optimizer.load_state_dict(state["optimizer"])

    def save(self, folder, outbox):
        save_vae(folder / "vae.pt", self.vae.vae, self.vae.optimizer, self.dataset.image_shape)
        write_file(folder / "latents.npy", lambda f: np.save(f, outbox["latents"]))
        write_json(folder / "history.json", outbox["history"])

    def summary(self, outbox):
        return {"elbo": outbox["elbo"]}


class JointGMM(Module):
    """One GMM over the concatenated latents of every module that sends it ``"latents"``: the
    GMM step of :class:`~vaegmm.modules.GMMModule` (chains, reported state, data-scaled prior), then
    each sender's block of the prior message (``"prior"``, :class:`~vaegmm.engine.Addressed`), and
    ``"assignments"``.

    Only **active** latent dimensions are clustered (Burda, Grosse & Salakhutdinov 2016: a
    dimension whose encoder means vary across the data by more than ``active_variance``). A VAE
    on a noisy modality leaves most of its dimensions at the N(0, I) prior (posterior collapse);
    their means are near-constant noise that would dominate the joint covariance and merge the
    clusters. An inactive dimension is sent N(0, 1) back, the prior it already matches.

    ``config.joint_covariance`` sets each category's covariance over the concatenated active
    dimensions: "full", or "block"-diagonal, one block per sender (``GibbsGMM(covariance_blocks=
    ...)``: the modalities independent given the category, each block with the prior its own
    latents would get).

    When it is also sent an ``"embedding"`` (from :class:`~vaegmm.manifold.JointEmbed`), it
    clusters that instead, and each sender's prior is the moment-matched mixture of its own
    latents' moments per category, weighted by the responsibilities (``ManifoldModule.message``);
    ``latent_model`` keeps those moments as a block-diagonal GMM over the latents (saved as
    ``gmm.npz``; the embedding's GMM as ``embedding_gmm.npz``).

    Parameters
    ----------
    name : str
    config : GMMConfig, or a TrainConfig (its GMM's fields: :meth:`~vaegmm.config.TrainConfig.gmm_config`)
        Its GMM's settings (n_clusters, gmm_sweeps, gmm_chains, gmm_prior, prior_from, joint_covariance, ...).
    device : torch.device or str, default=cpu
    active_variance : float, default=0.01
        The activity threshold (Burda et al.'s 10^-2); 0 clusters every dimension.
    distributed : vaegmm.distributed.Context, default=None
        With an active context the sweeps are sharded over the ranks (every rank is sent all the
        latents and sends the same prior).
    """

    def __init__(self, name, config, device=None, active_variance=0.01, distributed=None):
        super().__init__(name)
        if not (isinstance(active_variance, (int, float)) and 0 <= active_variance < np.inf):
            raise ValueError(f"active_variance must be a non-negative number, got {active_variance!r}.")
        self.config, self.active_variance = GMMConfig.of(config), float(active_variance)
        self.device = torch.device("cpu" if device is None else device)
        self.gmm = GMMModule(self.config, None, self.device, distributed=distributed)
        self.previous = None  # the last round's assignments (chain_init="previous")
        self.latent_model = None  # with a manifold: the categories' latent moments (block_latent_model)

    def describe(self):
        return {**super().describe(), "active_variance": self.active_variance}

    def active(self, latents):
        """The dimensions of ``latents`` it clusters: the active ones (the most varied if none is)."""
        return active_dimensions(latents, self.active_variance)

    def step(self, inbox, context):
        parts = paired_latents(inbox, self.name)
        actives = {source: self.active(latents) for source, latents in parts}
        previous = self.previous if self.config.chain_init == "previous" else None
        sizes = [int(actives[source].sum()) for source, _ in parts]
        edges = np.cumsum([0] + sizes)
        blocks = {source: (int(start), int(stop)) for (source, _), start, stop in zip(parts, edges[:-1], edges[1:])}
        embedding = inbox.get("embedding")
        if embedding is None:
            clustered = np.concatenate([latents[:, actives[source]] for source, latents in parts], axis=1)
            self.gmm.fit(clustered, context.seed, previous, progress=context.progress,
                         blocks=sizes if self.config.joint_covariance == "block" else None)
            message = self.gmm.message()
            prior = {source: _expand(message.block(*blocks[source]), actives[source]) for source, _ in parts}
            self.latent_model = None
        else:  # a manifold between: cluster its embedding; the message from the clusters' latent moments
            from .manifold import ManifoldModule

            self.gmm.fit(embedding, context.seed, previous, progress=context.progress)
            manifold, prior, moments = ManifoldModule(self.config, self.device), {}, []
            weights = manifold.weights(self.gmm.gmm, embedding)
            for source, latents in parts:
                prior[source] = _expand(manifold.message(weights, latents[:, actives[source]]), actives[source])
                moments.append(manifold.clusters)
            self.latent_model = block_latent_model(moments)
        self.previous = self.gmm.gmm.labels_.copy()
        return {"assignments": self.previous, "prior": Addressed(prior), "blocks": blocks,
                "active": {source: active.tolist() for source, active in actives.items()},
                "log_posterior": float(self.gmm.gmm.log_posterior_[self.gmm.gmm.reported_sweep_])}

    def state(self):
        return {"previous": self.previous}

    def restore(self, state):
        self.previous = state["previous"]

    def save(self, folder, outbox):
        gmm = self.gmm.gmm
        if self.latent_model is None:
            write_file(folder / "gmm.npz", lambda f: np.savez(f, mu=gmm.means_, Lambda=gmm.precisions_,
                                                              pi=gmm.weights_))
        else:  # gmm.npz: the categories over the latents (what predict and the figures read); the embedding's GMM
            write_file(folder / "gmm.npz", lambda f: np.savez(f, **self.latent_model))
            write_file(folder / "embedding_gmm.npz", lambda f: np.savez(f, mu=gmm.means_, Lambda=gmm.precisions_,
                                                                        pi=gmm.weights_))
        write_file(folder / "assignments.npy", lambda f: np.save(f, outbox["assignments"]))
        write_json(folder / "history.json", {"sweeps": self.gmm.sweeps, "blocks": outbox["blocks"],
                                             "active": outbox["active"]})

    def summary(self, outbox):
        return {"log_posterior": outbox["log_posterior"],
                "active_dims": int(sum(sum(active) for active in outbox["active"].values()))}


def active_dimensions(latents, threshold):
    """The active dimensions of ``latents`` (N, L), a boolean mask: those whose values vary across
    the data by more than ``threshold`` (the most varied one if none does)."""
    variance = latents.var(axis=0)
    active = variance > threshold
    if not active.any():
        active[np.argmax(variance)] = True
    return active


def paired_latents(inbox, name):
    """[(source, latents), ...] of every ``"latents"`` delivery in ``inbox``, checked to be paired."""
    parts = inbox.each("latents")
    if not parts:
        raise ValueError(f"Module {name!r} was sent no latents; wire a VAE's latents to it.")
    lengths = {len(latents) for _, latents in parts}
    if len(lengths) > 1:
        raise ValueError(f"Module {name!r} was sent latents of {sorted(lengths)} rows; the modalities' rows must be "
                         "paired (the same N).")
    return parts


def block_latent_model(moments):
    """The categories as a GMM over the concatenated (active) latents, from each modality's cluster
    moments (``ManifoldModule.clusters``: "pi", "mu", "covariance"): the means side by side and
    block-diagonal precisions (the modalities independent given the category), as ``gmm.npz``'s
    arrays {"mu", "Lambda", "pi"}."""
    from scipy.linalg import block_diag

    means = np.concatenate([m["mu"] for m in moments], axis=1)
    precisions = np.stack([block_diag(*[np.linalg.inv(m["covariance"][k]) for m in moments])
                           for k in range(means.shape[0])])
    return {"mu": means, "Lambda": 0.5 * (precisions + precisions.transpose(0, 2, 1)), "pi": moments[0]["pi"]}


def _expand(message, active):
    """A prior over the active dimensions of a latent, as a prior over all of them: N(0, 1),
    independent, in the inactive ones."""
    if active.all():
        return message
    index = torch.as_tensor(np.flatnonzero(active), device=message.mean.device)
    rows, dims = message.mean.shape[0], active.size
    mean = message.mean.new_zeros(rows, dims)
    mean[:, index] = message.mean
    if message.precision is None:
        var = message.mean.new_ones(rows, dims)
        var[:, index] = message.var
        return PriorMessage(mean, var=var, log_weights=message.log_weights)
    precision = torch.eye(dims, dtype=message.precision.dtype, device=mean.device).repeat(rows, 1, 1)
    precision[:, index.unsqueeze(1), index.unsqueeze(0)] = message.precision
    return PriorMessage(mean, precision=precision, log_weights=message.log_weights)


class GMMStep(Module):
    """The GMM of a single-modality run as a module of the engine: the GMM step of
    :class:`GMMModule` on the ``"latents"`` it is sent (or on their ``"embedding"``, when a
    manifold module sends one, the message then coming back through the manifold's latent-space
    moments). Sends ``"prior"``, ``"assignments"`` (the reported state's), ``"gmm"`` (the kept
    chain's fitted GibbsGMM), ``"sweeps"`` (its per-sweep records), ``"sweep_assignments"``
    (S, N, for an observer to score each sweep) and, with a manifold, ``"clusters"`` (the
    clusters' latent moments). Its state: the last assignments (``chain_init="previous"``).

    Parameters
    ----------
    name : str
    config : GMMConfig, or a TrainConfig (its GMM's fields: :meth:`~vaegmm.config.TrainConfig.gmm_config`)
    device : torch.device or str, default=cpu
    distributed : vaegmm.distributed.Context, default=None
    """

    def __init__(self, name, config, device=None, distributed=None):
        super().__init__(name)
        self.config, self.device = GMMConfig.of(config), torch.device("cpu" if device is None else device)
        self.module = GMMModule(self.config, None, self.device, distributed=distributed, record_assignments=True)
        self.previous = None

    def step(self, inbox, context):
        from .manifold import ManifoldModule

        latents, embedding = inbox["latents"], inbox.get("embedding")
        previous = self.previous if self.config.chain_init == "previous" else None
        self.module.fit(latents if embedding is None else embedding, context.seed, previous,
                        progress=context.progress)
        gmm, clusters = self.module.gmm, None
        if embedding is None:
            prior = self.module.message()
        else:
            manifold = ManifoldModule(self.config, self.device)
            prior = manifold.backward(gmm, embedding, latents)
            clusters = manifold.clusters
        self.previous = gmm.labels_
        return {"prior": prior, "assignments": gmm.labels_, "gmm": gmm, "sweeps": self.module.sweeps,
                "sweep_assignments": self.module.sweep_assignments, "clusters": clusters}

    def state(self):
        return {"previous": self.previous}

    def restore(self, state):
        self.previous = state["previous"]
