"""The manifold module of a run (SPEC §5, "A manifold step"): VAE -> manifold -> GMM, as N2D does.

One module with one job, beside :class:`~vaegmm.modules.VAEModule` and
:class:`~vaegmm.modules.GMMModule` (``TrainConfig.manifold = "umap"``)::

    VAEModule --latents (N, L)--> ManifoldModule --embedding (N, d)--> GMMModule
    GMMModule --fitted GMM--> ManifoldModule --PriorMessage in the latent space (N, L)--> next round's VAEModule

- **Forward**: UMAP (``umap-learn``; N2D's settings: ``manifold_dim`` = 10 components,
  ``manifold_neighbors`` = 20, ``manifold_min_dist`` = 0) embeds the VAE's latents; the GMM
  clusters the embedding. UMAP's random state is fixed from the round's seed, so a run is
  reproducible (UMAP then runs single-threaded).
- **Backward**: the GMM's responsibilities on the embedding, r_nk (or, with
  ``prior_from="last"``, each datum's reported cluster, one-hot), weight the **VAE latents**
  into each cluster's moments, mean_k = sum_n r_nk x_n / sum_n r_nk and covariance_k = the
  r-weighted scatter / sum_n r_nk (plus a ridge); datum n's prior is the Gaussian moment-matched
  to its mixture sum_k r_nk N(mean_k, covariance_k) (the construction of
  :func:`~vaegmm.messages.responsibility_moments`, with the latent-space moments). The message
  thereby carries the neighbourhood graph UMAP saw, in the space the VAE learns.
- :meth:`ManifoldModule.transform` embeds new latents with the fitted UMAP (never refitted).

UMAP runs single-threaded (a fixed random state turns its parallelism off; ``n_jobs=1``), its
BLAS calls within the package's thread limit (:mod:`vaegmm.threads`).

``umap-learn`` is a dependency of the package (the default manifold), imported only when the
module runs; an environment without it gets one sentence naming the install command.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np

from .config import ManifoldConfig
from .engine import Module
from .messages import PriorMessage, mixture_moments
from .threads import limit_threads

__all__ = ["ManifoldModule", "Embed", "JointEmbed", "forward_on_rank0", "import_umap", "latent_cluster_moments",
           "manifold_seed", "MANIFOLD_PRIORS", "RIDGE"]

MANIFOLD_PRIORS = ("responsibilities", "last")  # the prior_from values the manifold's message supports
RIDGE = 1e-6  # added to every cluster's latent covariance, as a fraction of the latents' mean variance


def import_umap():
    """The ``umap`` package, or ValueError naming the install command when it is missing."""
    try:
        import umap
    except ImportError:
        raise ValueError("manifold = umap (the default for one modality) needs the umap-learn package, which is "
                         "not installed; install it with `pip install umap-learn`, or run with manifold none."
                         ) from None
    return umap


def manifold_seed(seed_sequence):
    """UMAP's random_state for a round: an int in [0, 2**31) drawn from a child of the round's
    ``numpy.random.SeedSequence`` that its ``spawn()`` (the GMM's chains) never reaches."""
    child = np.random.SeedSequence(seed_sequence.entropy, spawn_key=(*seed_sequence.spawn_key, 0x756D6170))
    return int(child.generate_state(1, dtype=np.uint32)[0] >> 1)


def latent_cluster_moments(weights, latents, ridge=RIDGE):
    """Each cluster's moments of the latents weighted by ``weights``.

    Parameters
    ----------
    weights : ndarray of shape (N, K)
        r_nk >= 0 (responsibilities, or one-hot assignments).
    latents : ndarray of shape (N, L)
    ridge : float
        ``ridge`` times the latents' mean variance is added to every covariance's diagonal, so that
        a cluster with one member (or a flat one) still has a proper Gaussian.

    Returns
    -------
    weight : ndarray of shape (K,), sum_n r_nk / N (the cluster's share of the data)
    means : ndarray of shape (K, L), sum_n r_nk x_n / sum_n r_nk
    covariances : ndarray of shape (K, L, L), sum_n r_nk (x_n - mean_k)(x_n - mean_k)^T / sum_n r_nk + ridge I.
        An empty cluster (sum_n r_nk = 0; it weighs on no datum's prior) gets the latents' mean and
        covariance, so that it stays a proper Gaussian for the figures.
    """
    weights = np.asarray(weights, dtype=np.float64)
    latents = np.asarray(latents, dtype=np.float64)
    totals = weights.sum(axis=0)  # (K,)
    empty = totals <= np.finfo(np.float64).tiny
    safe = np.where(empty, 1.0, totals)
    means = (weights.T @ latents) / safe[:, None]
    overall_mean = latents.mean(axis=0)
    means[empty] = overall_mean
    offsets = latents[:, None, :] - means[None, :, :]  # (N, K, L)
    covariances = np.einsum("nk,nki,nkj->kij", weights, offsets, offsets) / safe[:, None, None]
    centred = latents - overall_mean
    covariances[empty] = centred.T @ centred / max(len(latents), 1)
    covariances = 0.5 * (covariances + covariances.transpose(0, 2, 1))
    jitter = ridge * float(np.mean(np.var(latents, axis=0))) + 1e-12
    covariances += jitter * np.eye(latents.shape[1])
    return totals / max(len(latents), 1), means, covariances


class ManifoldModule:
    """The manifold between the VAE and the GMM: UMAP forward, the latent-space prior backward.

    Parameters
    ----------
    config : TrainConfig, ManifoldConfig or GMMConfig
        :meth:`forward` reads manifold_dim, manifold_neighbors and manifold_min_dist (a
        ManifoldConfig's); :meth:`backward` and :meth:`message` read prior_from ("responsibilities"
        or "last") and prior_covariance (a GMMConfig's: the message is the GMM's).
    device : torch.device
        Where the prior message lives (the VAE's device).

    Attributes
    ----------
    model : the fitted ``umap.UMAP`` of the last :meth:`forward` (None before)
    embedding : ndarray of shape (N, d), float64, the last forward message
    clusters : dict of the last :meth:`backward`: "pi" (K,), "mu" (K, L), "covariance" (K, L, L),
        the clusters' moments of the VAE latents (what a run directory saves as latent_clusters.npz)
    """

    def __init__(self, config, device):
        if getattr(config, "prior_from", MANIFOLD_PRIORS[0]) not in MANIFOLD_PRIORS:  # TrainConfig refuses it too
            raise ValueError(f"prior_from must be one of {', '.join(MANIFOLD_PRIORS)} with manifold = umap, "
                             f"got {config.prior_from!r}.")
        self.config, self.device = config, device
        self.model = self.embedding = self.clusters = None

    def forward(self, latents, seed):
        """Fit UMAP to ``latents`` (N, L) with random_state ``seed`` (int) and return the embedding
        (N, manifold_dim), float64: the forward message to the GMM."""
        umap = import_umap()
        config = self.config
        self.model = umap.UMAP(n_components=config.manifold_dim, n_neighbors=config.manifold_neighbors,
                               min_dist=config.manifold_min_dist, random_state=int(seed), n_jobs=1)
        with limit_threads(), warnings.catch_warnings():  # BLAS within the package's thread limit
            # A fixed random_state makes UMAP single-threaded, which is asked for here; its warning says only that.
            warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
            embedding = self.model.fit_transform(np.asarray(latents, dtype=np.float32))
        self.embedding = np.asarray(embedding, dtype=np.float64)
        return self.embedding

    def transform(self, latents):
        """Embed new latents (n, L) with the fitted UMAP (its ``transform``, never a refit): (n, d) float64."""
        if self.model is None:
            raise ValueError("The manifold has not been fitted; call forward() (or load a run's manifold.pkl) first.")
        return transform(self.model, latents)

    def backward(self, gmm, embedding, latents):
        """The backward message: each datum's prior in the VAE's latent space.

        Parameters
        ----------
        gmm : GibbsGMM fitted to ``embedding``
        embedding : ndarray of shape (N, d), what the GMM clustered
        latents : ndarray of shape (N, L), the VAE latents the embedding came from

        Returns
        -------
        PriorMessage with a Gaussian per datum: the moment-matched mixture
        sum_k r_nk N(mean_k, covariance_k) of the clusters' latent moments (r one-hot on
        ``gmm.labels_`` with ``prior_from="last"``).
        """
        return self.message(self.weights(gmm, embedding), latents)

    def weights(self, gmm, embedding):
        """The weights (N, K) the message uses: one-hot on ``gmm.labels_`` with ``prior_from="last"``,
        else the GMM's responsibilities on ``embedding``."""
        if self.config.prior_from == "last":
            return np.eye(gmm.means_.shape[0])[np.asarray(gmm.labels_)]
        return gmm.predict_proba(embedding)

    def message(self, weights, latents):
        """Each datum's prior from cluster weights ``weights`` (N, K) (responsibilities, or one-hot
        assignments such as the naming game's signs) and the latents (N, L): the Gaussian
        moment-matched to sum_k r_nk N(mean_k, covariance_k) of :func:`latent_cluster_moments`."""
        pi, means, covariances = latent_cluster_moments(weights, latents)
        self.clusters = {"pi": pi, "mu": means, "covariance": covariances}
        mean, covariance = mixture_moments(np.asarray(weights, dtype=np.float64), means, covariances)
        return PriorMessage.from_moments(mean, covariance, self.config.prior_covariance, self.device)


def transform(model, latents):
    """``model.transform(latents)`` of a fitted ``umap.UMAP`` as (n, d) float64 (umap imported,
    or the install sentence, first: unpickling a model needs the package too)."""
    import_umap()
    with limit_threads():
        return np.asarray(model.transform(np.asarray(latents, dtype=np.float32)), dtype=np.float64)


class Embed(Module):
    """An agent's manifold step as a module: UMAP (:class:`~vaegmm.manifold.ManifoldModule`'s
    forward) embeds the ``"latents"`` it is sent; sends ``"embedding"`` and the fitted ``"model"``.

    Distributed (``distributed``, an active :class:`vaegmm.distributed.Context` of more than one
    rank): every rank is sent all the latents (the VAE gathers them); rank 0 alone fits UMAP,
    single-threaded as in one process, and sends the embedding to the others, so that every
    rank's GMM clusters the same embedding. The fitted model stays on rank 0 (the one that writes
    the run directory); the other ranks send ``"model"`` None.
    """

    def __init__(self, name, config, device, distributed=None):
        super().__init__(name)
        self.config = config = ManifoldConfig.of(config)
        self.manifold, self.distributed = ManifoldModule(config, device), distributed

    def step(self, inbox, context):
        embedding = forward_on_rank0(self.manifold, inbox["latents"], manifold_seed(context.seed), self.distributed)
        return {"embedding": embedding, "model": self.manifold.model}


def forward_on_rank0(manifold, latents, seed, distributed=None):
    """``manifold.forward(latents, seed)``; distributed (an active context of several ranks, every
    rank holding all the ``latents``), rank 0 alone fits UMAP and broadcasts the embedding, and
    the other ranks' ``manifold.model`` is None."""
    if distributed is None or not distributed.active or distributed.world_size == 1:
        return manifold.forward(latents, seed)
    if distributed.is_main:
        embedding = manifold.forward(latents, seed)
    else:
        embedding, manifold.model = np.empty((len(latents), manifold.config.manifold_dim), dtype=np.float64), None
    manifold.embedding = distributed.broadcast(embedding)
    return manifold.embedding


class JointEmbed(Module):
    """The manifold of multimodal categories: UMAP embeds the concatenated active latents of every
    module that sends it ``"latents"`` (the modalities, rows paired; active as
    :class:`~vaegmm.modules.JointGMM` counts them), so that the neighbourhood graph joins what the
    modalities show of each datum. Sends ``"embedding"`` and ``"model"``; saves ``manifold.pkl``
    (the fitted UMAP) and ``embedding.npy``. Distributed, rank 0 fits UMAP, as :class:`Embed`."""

    def __init__(self, name, config, device, active_variance=0.01, distributed=None):
        super().__init__(name)
        self.config, self.active_variance = ManifoldConfig.of(config), float(active_variance)
        self.manifold, self.distributed = ManifoldModule(self.config, device), distributed

    def describe(self):
        return {**super().describe(), "active_variance": self.active_variance}

    def step(self, inbox, context):
        from .modules import active_dimensions, paired_latents

        parts = paired_latents(inbox, self.name)
        joined = np.concatenate([latents[:, active_dimensions(latents, self.active_variance)]
                                 for _, latents in parts], axis=1)
        embedding = forward_on_rank0(self.manifold, joined, manifold_seed(context.seed), self.distributed)
        return {"embedding": embedding, "model": self.manifold.model}

    def save(self, folder, outbox):
        from .rundir import atomic_write_bytes, write_file

        atomic_write_bytes(folder / "manifold.pkl", pickle.dumps(outbox["model"], protocol=pickle.HIGHEST_PROTOCOL))
        write_file(folder / "embedding.npy", lambda f: np.save(f, outbox["embedding"]))
