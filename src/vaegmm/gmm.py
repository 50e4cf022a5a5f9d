"""Bayesian Gaussian mixture fitted by blocked Gibbs sampling.

Model (Bishop, PRML §10.2; Murphy, MLaPP §4.6.3 for the Gauss–Wishart conjugate update)::

    pi        ~ Dirichlet(alpha)
    Lambda_k  ~ Wishart(W, nu)
    mu_k      ~ Normal(m, (beta * Lambda_k)^-1)
    z_n       ~ Categorical(pi)
    x_n       ~ Normal(mu_{z_n}, Lambda_{z_n}^-1)

One sweep draws, in this order, ``z | x, mu, Lambda, pi`` (one categorical draw per datum from
log-domain responsibilities), then ``pi | z`` and ``(mu_k, Lambda_k) | x, z`` for every k.

The estimator knows nothing about the VAE: it takes an array of shape (n_samples, n_features)
and returns cluster parameters and assignments. Its numerical kernels are in
:mod:`vaegmm.gibbs`; every one is vectorised over data and clusters (no Python loop per datum, no
N x N array). Time per sweep is O(N K L^2), memory O(N K + N L + K L^2), or O(N K + N L^2)
with the monomial form below (chosen only where L^2 / 2 is at most about K L).

Speed. Where it is cheaper (L (L + 3) / 2 + 1 <= K L, e.g. K = 10, L = 12), :meth:`GibbsGMM.fit`
computes the monomials of degree <= 2 of every (centred) datum once, shape (P, N) with
P = L (L + 1) / 2 + L + 1; then every sweep needs only two matrix products with them: the log
densities of all data under all clusters, (K, P) @ (P, N), and the clusters' sufficient
statistics (counts, sums, scatter matrices), (P, N) @ (N, K). Otherwise it uses the Cholesky
form of the Mahalanobis term and per-cluster slices of the data sorted by label. Per-datum
arrays are laid out (K, N), so reductions over clusters are element-wise operations on rows.
The data are centred once (the posterior is translation-equivariant), which keeps the expanded
quadratic form accurate in float64. Every array is float64, as before.
"""

from __future__ import annotations

import copy
import numbers
import warnings

import numpy as np
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .gibbs import (
    EM_RESTARTS,
    SINGLE_THREAD_WORK,
    NumpySweepData,
    block_diagonal,
    block_slices,
    cholesky,
    data_scaled_prior,
    em_labels,
    estimate_log_gaussian_prob,
    log_joint,
    log_joint_constant,
    posterior_gauss_wishart,
    sample_categorical,
    sample_log_dirichlet,
    sample_block_wishart,
    sample_means,
    sufficient_statistics,
)
from .split_merge import log_collapsed_posterior
from .split_merge import split_merge as split_merge_moves
from .threads import ONE_THREAD, limit_threads

__all__ = ["GibbsGMM", "FIXED_WISHART_SCALE"]

_BLOCK_FLOATS = 2**17  # predict's row blocks hold at most this many floats of (rows, K, L) work (1 MiB)
FIXED_WISHART_SCALE = 0.55  # the reference implementation's W = 0.55 I (with m = 0), prior="fixed"


def chain_score(gmm, keep="joint"):
    """A fitted single chain's score by ``keep`` (:class:`GibbsGMM`'s parameter): the collapsed log
    posterior of its reported assignments, or the joint log posterior of its reported state."""
    if keep == "collapsed":
        return float(gmm.log_collapsed_posterior_)
    return float(gmm.log_posterior_[gmm.reported_sweep_])


class GibbsGMM(ClusterMixin, BaseEstimator):
    """Bayesian Gaussian mixture with a Gauss–Wishart prior, fitted by blocked Gibbs sampling.

    Parameters
    ----------
    n_components : int or "auto", default=10
        Number of clusters K; "auto": an overfitted mixture of ``max_components`` clusters with a
        sparse symmetric Dirichlet prior on the weights (Malsiner-Walli, Frühwirth-Schnatter & Grün
        2016, "Model-based clustering based on sparse finite Gaussian mixtures"), so that the
        superfluous clusters empty and the data choose K: the number of non-empty clusters per
        sweep is ``clusters_found_``, its posterior mode ``n_clusters_found_``. An emptied
        cluster's parameters are drawn from the prior every sweep, so it stays available to be
        re-filled. The chain then starts from k-means with ``max_components`` clusters (unless
        ``init_labels`` are given); a prior scaled to the data (``mean_prior``,
        ``wishart_scale``; see :func:`vaegmm.modules.gauss_wishart_prior`) is recommended.
    max_components : int, default=30
        The upper bound on K with ``n_components="auto"``.
    n_sweeps : int, default=100
        Number of Gibbs sweeps run by :meth:`fit`.
    alpha : float, default=None
        Concentration of the symmetric Dirichlet prior on the weights; None: 0.3 for a fixed K,
        0.01 / max_components with ``n_components="auto"`` (sparse: Malsiner-Walli et al.'s e0 = 0.01 scaled).
    beta : float, default=1.0
        Scale of the prior precision of the means, mu_k ~ N(m, (beta Lambda_k)^-1).
    prior : {"data", "data-axis", "fixed"}, default="data"
        Where the Gauss-Wishart prior's m and W come from when ``mean_prior`` or
        ``wishart_scale`` are not given. "data": scaled to the data X given to :meth:`fit`
        (:func:`vaegmm.gibbs.data_scaled_prior`: m = the data mean, W^-1 = nu Cov(X) / K^(2/L)), so
        the clusters' expected size follows the data whatever their scale, as scikit-learn's
        BayesianGaussianMixture and SERKET's GMM do. "data-axis": the same with W^-1 = nu Cov(X) /
        K^2, clusters a K-th of the data's spread along every axis (for an embedding whose
        clusters are far apart, ``--manifold umap``). "fixed": the reference implementation's
        m = 0 and W = 0.55 I (:data:`FIXED_WISHART_SCALE`), which merges clusters of data whose
        scale differs from the reference's latents.
    mean_prior : array-like of shape (n_features,), default=None
        Prior mean m of the cluster means; None: from ``prior``.
    wishart_scale : float or array-like of shape (n_features, n_features), default=None
        Scale matrix W of the Wishart prior; a float c means c * I; None: from ``prior``.
    wishart_dof : float, default=None
        Degrees of freedom nu of the Wishart prior (> n_features - 1); n_features when None.
    covariance_blocks : sequence of int, default=None
        None: full precision matrices. Sizes of consecutive groups of features (summing to
        n_features): every Lambda_k is block-diagonal, the groups independent given the cluster,
        each block with its own Wishart prior (W's diagonal block, nu_b = L_b + nu - L degrees
        of freedom; a prior scaled to the data scales each block to its own features). For features
        that are the latents of several modalities of one datum (:mod:`vaegmm.multimodal`):
        every modality then adds its own evidence for the cluster. Not with ``split_merge``.
    init : {"em", "prior", "kmeans++"}, default="em"
        How the chain starts (``vaegmm train``: ``--gmm-init``, the same default). "prior"
        draws (pi, mu, Lambda) from the prior, as the reference
        implementation does; "kmeans++" places the means on data points chosen by k-means++
        seeding with the prior's expected precision nu W, which is robust to latents whose
        scale differs from the prior's. "em" starts from the assignments of the most likely of
        ``EM_RESTARTS`` k-means-started EM fits of a full-covariance mixture (a stable mode,
        so that the chain's luck does not decide the partition), drawing the first (pi, mu,
        Lambda) from their posterior given them. The EM fits run on one thread
        (:mod:`vaegmm.threads`).
    report : {"map", "last"}, default="map"
        Which state of the chain :meth:`fit` leaves: "map", the parameters (pi, mu, Lambda) of the
        sweep whose state has the highest joint log posterior log p(z, pi, mu, Lambda | X)
        (``log_posterior_``; labels never look), with ``labels_`` the most probable assignment
        under them (so ``fit_predict(X) == fit(X).predict(X)``); or "last", the last sweep's
        parameters and drawn assignments (the reference's report, one random draw).
    n_chains : int, default=4
        Independent chains (generators spawned from ``random_state``), run one after the other;
        the one that ``keep`` scores highest is kept (labels never look), its attributes becoming
        this estimator's. ``callback`` sees every chain's sweeps. Four chains cost four times one
        chain's time and cut the spread of accuracy between fits with different seeds on fixed
        MNIST latents from up to 0.044 to 0.003-0.012 (``python -m benchmarks.chains``;
        docs/accuracy.md).
    keep : {"joint", "collapsed"}, default="joint"
        Which of the ``n_chains`` chains is kept: the one whose reported state has the highest
        joint log posterior (``log_posterior_`` at ``reported_sweep_``), or the one whose reported
        assignments ``labels_`` have the highest collapsed log posterior log p(z | X), pi, mu and
        Lambda integrated out (``log_collapsed_posterior_``;
        :func:`vaegmm.split_merge.log_collapsed_posterior`), which scores a partition alone rather
        than one draw of the parameters with it. "collapsed" won on the selection set's latents
        but not on the benchmark's (docs/accuracy.md).
    split_merge : int, default=0
        Sequentially-allocated split-merge Metropolis-Hastings moves per sweep (Dahl 2005; see
        :mod:`vaegmm.split_merge`), after the draw of z: whole clusters split into an empty slot
        or merge, with pi, mu and Lambda integrated out. NumPy sampler on one process only.
    random_state : None, int or numpy.random.Generator, default=None
        Seed or generator; the sampler uses one ``numpy.random.Generator`` and nothing else.
    callback : callable, default=None
        Called after every sweep as ``callback(sweep, assignments, model)``, where ``sweep`` counts
        from 0, ``assignments`` is the assignment drawn in that sweep and ``model`` is this estimator
        with that sweep's parameters set. Used to record metrics per sweep.
    progress : bool, default=False
        Show a tqdm progress bar over sweeps.
    device : None, str or torch.device, default=None
        None: the NumPy sampler. A torch device ("cuda", "cuda:1", "cpu"): the per-datum work of
        every sweep (log densities, the draw of z, sufficient statistics) runs in torch on that
        device (:mod:`vaegmm.gmm_torch`), the K x L x L parameter algebra stays in NumPy; the
        chain has the same distribution, but not the same numbers as the NumPy sampler's for
        one seed. Attributes are NumPy arrays either way.
    distributed : vaegmm.distributed.Context, default=None
        Shard the sweeps over the ranks of a ``torch.distributed`` process group (every rank
        calls ``fit`` with all of X and the same ``random_state``): each rank draws z of its
        shard with counter-based uniforms, the sufficient statistics are all-reduced and rank
        0's draw of the parameters is broadcast (:class:`vaegmm.distributed.ShardedSweepData`).
        The chain does not depend on the number of ranks (up to the order of floating-point
        sums); it is not the chain of ``distributed=None`` for the same seed. NumPy sweeps only.

    Attributes
    ----------
    means_ : ndarray of shape (n_components, n_features)
        Cluster means of the reported state (``report``).
    precisions_ : ndarray of shape (n_components, n_features, n_features)
        Cluster precision matrices Lambda_k of the reported state.
    precisions_cholesky_ : ndarray of shape (n_components, n_features, n_features)
        Lower Cholesky factors of ``precisions_``.
    covariances_ : ndarray of shape (n_components, n_features, n_features)
        Inverses of ``precisions_``.
    weights_ : ndarray of shape (n_components,)
        Mixture weights pi of the reported state.
    labels_ : ndarray of shape (n_samples,)
        Assignments of the reported state: with ``report="map"`` the most probable cluster of
        each datum under the reported parameters (``predict``), with "last" the last sweep's draw.
        The clusters holding data are numbered first (0, 1, ... without gaps), the empty ones
        after them, and the parameters follow that numbering.
    log_posterior_ : ndarray of shape (n_sweeps,)
        log p(X, z, pi, mu, Lambda) of the state after each sweep (z drawn, then the parameters
        drawn given it): the log posterior up to a constant (:func:`vaegmm.gibbs.log_joint`).
    reported_sweep_ : int
        The sweep (from 0) whose parameters are reported: the argmax of ``log_posterior_``
        with ``report="map"``, the last with "last".
    log_collapsed_posterior_ : float
        log p(z | X) of ``labels_`` up to a constant, with pi, mu and Lambda integrated out.
    chains_log_posterior_ : ndarray of shape (n_chains,)
        The joint log posterior of each chain's reported state (``n_chains`` > 1 only).
    chains_log_collapsed_posterior_ : ndarray of shape (n_chains,)
        Each chain's ``log_collapsed_posterior_`` (``n_chains`` > 1 only).
    best_chain_ : int
        The chain kept (``n_chains`` > 1 only).
    n_jitter_ : int
        How many Cholesky factorisations of the fit needed jitter (0 normally); a
        RuntimeWarning says so when it is not 0.
    max_jitter_ : float
        The largest jitter used, relative to the mean diagonal (at most 1e-3).
    log_likelihood_ : ndarray of shape (n_sweeps,)
        log p(X | mu, Lambda, pi) under the parameters each sweep started from.
    n_components_ : int
        The number of clusters the arrays hold: ``n_components``, or ``max_components`` for "auto".
    clusters_found_ : ndarray of shape (n_sweeps,)
        Non-empty clusters after each sweep.
    n_clusters_found_ : int
        The posterior mode of that number over the last half of the sweeps (the estimate of K).
    clusters_found_posterior_ : dict
        {number of non-empty clusters: share of the last half of the sweeps}.
    n_features_in_ : int
    """

    def __init__(
        self,
        n_components=10,
        *,
        max_components=30,
        n_sweeps=100,
        alpha=None,
        beta=1.0,
        prior="data",
        mean_prior=None,
        wishart_scale=None,
        wishart_dof=None,
        covariance_blocks=None,
        init="em",
        report="map",
        n_chains=4,
        keep="joint",
        split_merge=0,
        random_state=None,
        callback=None,
        progress=False,
        device=None,
        distributed=None,
    ):
        self.n_components = n_components
        self.max_components = max_components
        self.n_sweeps = n_sweeps
        self.alpha = alpha
        self.beta = beta
        self.prior = prior
        self.mean_prior = mean_prior
        self.wishart_scale = wishart_scale
        self.wishart_dof = wishart_dof
        self.covariance_blocks = covariance_blocks
        self.init = init
        self.report = report
        self.n_chains = n_chains
        self.keep = keep
        self.split_merge = split_merge
        self.random_state = random_state
        self.callback = callback
        self.progress = progress
        self.device = device
        self.distributed = distributed

    @property
    def _auto(self):
        return isinstance(self.n_components, str) and self.n_components == "auto"

    def _check_components(self):
        if not (self._auto or (isinstance(self.n_components, numbers.Integral) and self.n_components >= 1)):
            raise ValueError(f"n_components must be a positive integer or 'auto', got {self.n_components!r}.")
        if self._auto and not (isinstance(self.max_components, numbers.Integral) and self.max_components >= 1):
            raise ValueError(f"max_components must be a positive integer, got {self.max_components!r}.")

    def _n_slots(self):
        """K of the arrays: n_components, or max_components for "auto"."""
        return self.max_components if self._auto else self.n_components

    def _alpha_value(self):
        if self.alpha is not None:
            return self.alpha
        return 0.01 / self.max_components if self._auto else 0.3

    # -- input checks --------------------------------------------------------------------------
    def _validate_data(self, X, *, fitting):
        """X as a float64 (n_samples, n_features) array (scikit-learn's checks), or one clear
        ValueError; ``fitting`` resets ``n_features_in_``, else X must match it."""
        if fitting:
            X = validate_data(self, X, dtype=np.float64, ensure_all_finite=False)
        else:
            check_is_fitted(self, "means_")
            X = validate_data(self, X, dtype=np.float64, ensure_all_finite=False, reset=False)
        if not np.all(np.isfinite(X)):
            raise ValueError("The data contain NaN or infinite values; remove or fix them before fitting.")
        if fitting:
            self._check_components()
            if X.shape[0] < self._n_slots():
                raise ValueError(
                    f"Got {X.shape[0]} data points but {self._n_slots()} clusters "
                    f"({'max_components' if self._auto else 'n_components'}); "
                    "use at least as many data points as clusters, or fewer clusters."
                )
        return X

    def _check_fitted(self):
        check_is_fitted(self, "means_")

    def _resolve_prior(self, X):
        """Check the hyperparameters and return (m, W^-1, nu) for the data X."""
        n_features = X.shape[1]
        self._check_components()
        if not (isinstance(self.n_sweeps, numbers.Integral) and self.n_sweeps >= 1):
            raise ValueError(f"n_sweeps must be a positive integer, got {self.n_sweeps!r}.")
        if not np.all(np.asarray(self._alpha_value(), dtype=float) > 0):
            raise ValueError(f"alpha (Dirichlet concentration) must be positive, got {self.alpha!r}.")
        if not self.beta > 0:
            raise ValueError(f"beta must be positive, got {self.beta!r}.")
        if self.prior not in ("data", "data-axis", "fixed"):
            raise ValueError(f"prior must be 'data', 'data-axis' or 'fixed', got {self.prior!r}.")
        if isinstance(self.split_merge, bool) or not isinstance(self.split_merge, numbers.Integral) or (
                self.split_merge < 0):
            raise ValueError(f"split_merge must be a non-negative integer (moves per sweep), got {self.split_merge!r}.")
        if self.split_merge and (self.distributed is not None or self.device is not None):
            raise ValueError("split_merge moves run in the NumPy sampler on one process; use device=None and "
                             "distributed=None, or split_merge=0.")
        if self.report not in ("map", "last"):
            raise ValueError(f"report must be 'map' or 'last', got {self.report!r}.")
        if self.keep not in ("joint", "collapsed"):
            raise ValueError(f"keep must be 'joint' or 'collapsed', got {self.keep!r}.")
        dof = float(n_features if self.wishart_dof is None else self.wishart_dof)
        if not dof > n_features - 1:
            raise ValueError(
                f"wishart_dof must exceed n_features - 1 = {n_features - 1}, got {dof:g}."
            )
        blocks = self._blocks = self._check_blocks(n_features)  # (read by the draws of this fit)
        data_mean = data_scale = None
        scaled = self.prior != "fixed"
        if scaled and (self.mean_prior is None or self.wishart_scale is None):
            data_mean, data_scale = data_scaled_prior(X, self._n_slots(), dof, per_axis=self.prior == "data-axis",
                                                      blocks=blocks)
        if self.mean_prior is not None:
            mean_prior = np.asarray(self.mean_prior, dtype=float)
        else:
            mean_prior = data_mean if scaled else np.zeros(n_features)
        if mean_prior.shape != (n_features,):
            raise ValueError(f"mean_prior must have shape ({n_features},), got {mean_prior.shape}.")
        if self.wishart_scale is not None:
            scale = np.asarray(self.wishart_scale, dtype=float)
        else:
            scale = data_scale if scaled else np.asarray(FIXED_WISHART_SCALE)
        if scale.ndim == 0:
            if not scale > 0:
                raise ValueError(f"wishart_scale must be positive, got {self.wishart_scale!r}.")
            scale = scale * np.eye(n_features)
        if scale.shape != (n_features, n_features):
            raise ValueError(f"wishart_scale must be a float or a ({n_features}, {n_features}) matrix.")
        scale = block_diagonal(scale, blocks)  # (with covariance_blocks, its diagonal blocks)
        try:
            np.linalg.cholesky(scale)
        except np.linalg.LinAlgError:
            raise ValueError("wishart_scale must be symmetric positive definite.") from None
        if self.init not in ("prior", "kmeans++", "em"):
            raise ValueError(f"init must be 'prior', 'kmeans++' or 'em', got {self.init!r}.")
        return mean_prior, np.linalg.inv(scale), dof

    def _check_blocks(self, n_features):
        """``covariance_blocks`` as a tuple of positive ints summing to n_features, or None."""
        if self.covariance_blocks is None:
            return None
        blocks = np.asarray(self.covariance_blocks)
        if blocks.ndim != 1 or blocks.size == 0 or not np.issubdtype(blocks.dtype, np.integer) or (
                blocks.min() < 1 or blocks.sum() != n_features):
            raise ValueError(f"covariance_blocks must be positive integers summing to n_features = {n_features}, "
                             f"got {self.covariance_blocks!r}.")
        if self.split_merge:
            raise ValueError("split_merge moves assume full covariances; use covariance_blocks=None or split_merge=0.")
        return tuple(int(size) for size in blocks)

    # -- the sampler ---------------------------------------------------------------------------
    def _initialize(self, X, rng, mean_prior, scale_inv, dof):
        """Starting (log_weights, means, precisions) of the chain."""
        n_samples, n_features = X.shape
        K = self._n_slots()
        log_weights = sample_log_dirichlet(np.broadcast_to(np.asarray(self._alpha_value(), float), (K,)), rng)
        if self.init == "prior":
            precisions = sample_block_wishart(np.broadcast_to(scale_inv, (K, n_features, n_features)), np.full(K, dof),
                                              self._blocks, rng, self._jitter_log)
            means = sample_means(
                np.broadcast_to(mean_prior, (K, n_features)), np.full(K, self.beta),
                cholesky(precisions, self._jitter_log), rng,
            )
        else:  # k-means++ seeding (Arthur & Vassilvitskii 2007) for the means
            expected = np.linalg.inv(scale_inv)  # E[Lambda] = nu W (per block, nu_b W_bb)
            for block in block_slices(n_features, self._blocks):
                expected[block, block] *= dof - n_features + block.stop - block.start
            precisions = np.broadcast_to(expected, (K, n_features, n_features)).copy()
            means = np.empty((K, n_features))
            means[0] = X[rng.integers(n_samples)]
            closest = np.sum((X - means[0]) ** 2, axis=1)
            for k in range(1, K):
                total = closest.sum()
                index = rng.choice(n_samples, p=closest / total) if total > 0 else rng.integers(n_samples)
                means[k] = X[index]
                closest = np.minimum(closest, np.sum((X - means[k]) ** 2, axis=1))
        return log_weights, means, precisions

    def _initialize_from_labels(self, X, labels, rng, alpha, mean_prior, scale_inv, dof):
        """Starting (log_weights, means, precisions) drawn from their posterior given ``labels``."""
        labels = np.asarray(labels)
        if labels.shape != (X.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"init_labels must be {X.shape[0]} integers, one per data point; got shape "
                             f"{labels.shape} of {labels.dtype}.")
        if labels.min() < 0 or labels.max() >= self._n_slots():
            raise ValueError(f"init_labels must lie in 0..{self._n_slots() - 1}; got {labels.min()}..{labels.max()}.")
        shift = X.mean(axis=0)  # centred, as in the sweeps
        statistics = sufficient_statistics(X - shift, labels, self._n_slots())
        log_weights, means, precisions, _ = self._sample_parameters(
            statistics, alpha, mean_prior - shift, scale_inv, dof, shift, rng
        )
        return log_weights, means, precisions

    def _sample_parameters(self, statistics, alpha, centred_mean_prior, scale_inv, dof, shift, rng):
        """One draw of (pi, Lambda, mu) given the assignments' statistics of centred data.

        pi | z ~ Dirichlet(alpha + N_k); Lambda_k | x, z ~ Wishart; mu_k | Lambda_k, x, z ~ Normal.

        Returns
        -------
        log_weights (K,), means (K, L) (uncentred), precisions (K, L, L), their Cholesky factors
        """
        counts, sums, outer_sums = statistics
        log_weights = sample_log_dirichlet(alpha + counts, rng)
        beta_hat, m_hat, scale_inv_hat, dof_hat = posterior_gauss_wishart(
            counts, sums, outer_sums, self.beta, centred_mean_prior, scale_inv, dof
        )
        precisions = sample_block_wishart(scale_inv_hat, dof_hat, self._blocks, rng, self._jitter_log)
        precisions_chol = cholesky(precisions, self._jitter_log)
        means = sample_means(m_hat + shift, beta_hat, precisions_chol, rng)
        return log_weights, means, precisions, precisions_chol

    def _set_parameters(self, log_weights, means, precisions, precisions_chol):
        self.weights_ = np.exp(log_weights)
        self.means_ = means
        self.precisions_ = precisions
        self.precisions_cholesky_ = precisions_chol

    @property
    def covariances_(self):
        self._check_fitted()
        return np.linalg.inv(self.precisions_)

    def fit(self, X, y=None, *, init_labels=None):
        """Run ``n_sweeps`` Gibbs sweeps on X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        init_labels : array-like of int of shape (n_samples,), default=None
            Start the chain from these assignments (e.g. the previous round's), drawing the
            first (pi, mu, Lambda) from their posterior given them; ``init`` is then unused.

        Returns
        -------
        self
        """
        X = self._validate_data(X, fitting=True)
        if isinstance(self.n_chains, bool) or not isinstance(self.n_chains, numbers.Integral) or self.n_chains < 1:
            raise ValueError(f"n_chains must be a positive integer, got {self.n_chains!r}.")
        if self.n_chains > 1:
            return self._fit_chains(X, init_labels)
        n_samples, n_features = X.shape
        mean_prior, scale_inv, dof = self._resolve_prior(X)
        rng = np.random.default_rng(self.random_state)
        K = self._n_slots()
        alpha = np.broadcast_to(np.asarray(self._alpha_value(), dtype=float), (K,))
        self.n_features_in_ = n_features
        self.n_components_ = K

        self._jitter_log = []
        start = self._start(X, init_labels, rng, alpha, mean_prior, scale_inv, dof)
        n_monomials = n_features * (n_features + 3) // 2 + 1
        with limit_threads(ONE_THREAD if n_samples * n_monomials * K < SINGLE_THREAD_WORK else None):
            self.log_likelihood_ = self._run_sweeps(X, rng, start, alpha, mean_prior, scale_inv, dof)
        self.log_collapsed_posterior_ = log_collapsed_posterior(
            X, self.labels_, K, alpha=float(alpha[0]), beta=self.beta, mean_prior=mean_prior, scale_inv=scale_inv,
            dof=dof, blocks=self._blocks)
        self.n_iter_ = self.n_sweeps
        self.n_jitter_ = len(self._jitter_log)
        self.max_jitter_ = max(self._jitter_log, default=0.0)
        del self._jitter_log
        if self.n_jitter_:
            warnings.warn(
                f"GibbsGMM: {self.n_jitter_} Cholesky factorisations needed jitter (at most "
                f"{self.max_jitter_:.0e} of the mean diagonal); the data are close to degenerate.",
                RuntimeWarning, stacklevel=2,
            )
        return self

    def _start(self, X, init_labels, rng, alpha, mean_prior, scale_inv, dof):
        """The hook that starts the chain: (log_weights, means, precisions) from ``init_labels``
        or ``init`` (an EM or, for "auto", k-means partition, then the parameters drawn given it;
        or a draw from the prior or k-means++ means). Distributed, rank 0's partition is used."""
        n_samples = X.shape[0]
        K = self._n_slots()
        if init_labels is None and (self._auto or self.init == "em"):
            seed = int(rng.integers(2**31 - 1))
            if self.distributed is not None and not self.distributed.is_main:
                init_labels = np.zeros(n_samples, dtype=np.int64)  # rank 0 finds the start (broadcast below)
            elif self._auto:  # over-split by k-means; the sparse prior empties the rest
                from sklearn.cluster import KMeans

                with limit_threads(ONE_THREAD):  # as EM's start (vaegmm.threads)
                    init_labels = KMeans(K, n_init=1, random_state=seed).fit_predict(X).astype(np.int64)
            else:
                init_labels = em_labels(X, K, EM_RESTARTS, seed)
        if init_labels is not None and self.distributed is not None:
            init_labels = self.distributed.broadcast(np.asarray(init_labels, dtype=np.int64))
        if init_labels is None:
            return self._initialize(X, rng, mean_prior, scale_inv, dof)
        return self._initialize_from_labels(X, init_labels, rng, alpha, mean_prior, scale_inv, dof)

    def _sweep_data(self, centred, rng):
        """The hook that holds the centred data for the sweeps' per-datum work, on its backend:
        NumPy (:class:`~vaegmm.gibbs.NumpySweepData`), torch on ``device``
        (:class:`~vaegmm.gmm_torch.TorchSweepData`) or this rank's shard
        (:class:`~vaegmm.distributed.ShardedSweepData`). Each draws z and sums the statistics."""
        K = self._n_slots()
        if self.distributed is not None:
            from .distributed import ShardedSweepData

            return ShardedSweepData(centred, K, self.distributed, seed=int(rng.integers(2**63 - 1)))
        if self.device is None:
            return NumpySweepData(centred, K)
        from .gmm_torch import TorchSweepData

        return TorchSweepData(centred, K, self.device, seed=int(rng.integers(2**63 - 1)))

    def _run_sweeps(self, X, rng, start, alpha, mean_prior, scale_inv, dof):
        """The Gibbs sweeps of :meth:`fit` from ``start = (log_weights, means, precisions)``.

        Returns
        -------
        log_likelihood : ndarray of shape (n_sweeps,)
        """
        n_samples, n_features = X.shape
        K = self._n_slots()
        log_weights, means, precisions = start
        precisions_chol = cholesky(precisions, self._jitter_log)
        # Work in coordinates centred on the data mean: the Gauss-Wishart posterior is
        # translation-equivariant (m_hat shifts, W_hat and nu_hat do not change), and centring
        # keeps the sufficient statistics and the expanded quadratic form accurate.
        shift = X.mean(axis=0)  # (L,)
        centred_mean_prior = mean_prior - shift
        data = self._sweep_data(X - shift, rng)
        if self.distributed is not None:  # every rank starts from rank 0's parameters
            log_weights, means, precisions, precisions_chol = data.share(log_weights, means, precisions,
                                                                         precisions_chol)
        log_likelihood = np.empty(self.n_sweeps)
        self.log_posterior_ = np.empty(self.n_sweeps)
        self.split_merge_accepted_ = 0
        occupied = np.empty(self.n_sweeps, dtype=np.int64)
        best = None  # (log posterior, sweep, parameters) of the most probable state so far
        constant = log_joint_constant(alpha, self.beta, scale_inv, dof, K, n_features,
                                      blocks=self._blocks)
        sweeps = range(self.n_sweeps)
        if self.progress:
            from tqdm.auto import tqdm

            sweeps = tqdm(sweeps, desc="Gibbs sweeps", unit="sweep", leave=False)
        for sweep in sweeps:
            # z | x, mu, Lambda, pi: the O(N K L^2) work, on the data's backend.
            labels, log_likelihood[sweep] = data.sample_labels(means - shift, precisions_chol, log_weights, rng)
            if self.split_merge:  # whole-cluster moves on z, with the parameters integrated out
                labels, accepted = split_merge_moves(X - shift, labels, K, alpha=float(alpha[0]), beta=self.beta,
                                               mean_prior=centred_mean_prior, scale_inv=scale_inv, dof=dof,
                                               rng=rng, n_moves=self.split_merge)
                self.split_merge_accepted_ += accepted
            # pi | z
            statistics = data.sufficient_statistics(labels)
            occupied[sweep] = np.count_nonzero(statistics[0])
            log_weights, means, precisions, precisions_chol = self._sample_parameters(
                statistics, alpha, centred_mean_prior, scale_inv, dof, shift, rng
            )
            if self.distributed is not None:  # every rank continues from rank 0's draw
                log_weights, means, precisions, precisions_chol = data.share(log_weights, means, precisions,
                                                                             precisions_chol)
                # The shards' labels are gathered only where they are read.
                labels = data.all_labels(labels) if self.callback is not None or sweep == self.n_sweeps - 1 else None
            if labels is not None:
                self.labels_ = labels
            self.log_posterior_[sweep] = log_joint(
                statistics, log_weights, means - shift, precisions, precisions_chol, alpha, self.beta,
                centred_mean_prior, scale_inv, dof, constant)
            if best is None or self.log_posterior_[sweep] >= best[0]:  # ties: the later state
                best = (self.log_posterior_[sweep], sweep, (log_weights, means, precisions, precisions_chol))
            self._set_parameters(log_weights, means, precisions, precisions_chol)
            self.clusters_found_ = occupied[:sweep + 1]
            if self.callback is not None:
                self.callback(sweep, labels, self)
        del data  # (its per-datum arrays, before predict's)
        if self.report == "map":  # the most probable state's parameters, and z at its conditional mode
            _, self.reported_sweep_, parameters = best
            self._set_parameters(*parameters)
            self.labels_ = self.predict(X)
        else:
            self.reported_sweep_ = self.n_sweeps - 1
        self._occupied_first()
        last_half = occupied[self.n_sweeps // 2:]
        values, counts = np.unique(last_half, return_counts=True)
        self.n_clusters_found_ = int(values[np.argmax(counts)])  # ties: the smaller K
        self.clusters_found_posterior_ = {int(v): float(c / len(last_half)) for v, c in zip(values, counts)}
        return log_likelihood

    def _fit_chains(self, X, init_labels):
        """``n_chains`` independent single-chain fits; the one ``keep`` scores highest is kept."""
        chains = []
        for chain_rng in np.random.default_rng(self.random_state).spawn(self.n_chains):
            chain = copy.copy(self)  # the same hyperparameters (and callback), one chain, its own generator
            chain.n_chains, chain.random_state = 1, chain_rng
            chains.append(chain.fit(X, init_labels=init_labels))
        scores = {keep: np.array([chain_score(chain, keep) for chain in chains]) for keep in ("joint", "collapsed")}
        best = int(np.argmax(scores[self.keep]))
        self.__dict__.update({name: value for name, value in vars(chains[best]).items()
                              if name.endswith("_") and not name.startswith("_")})
        self.chains_log_posterior_, self.chains_log_collapsed_posterior_ = scores["joint"], scores["collapsed"]
        self.best_chain_ = best
        return self

    def _occupied_first(self):
        """Renumber the reported clusters so that those holding data come first, in their
        order (a mixture's numbering is arbitrary): ``labels_`` then take every value from 0 to
        their maximum, as scikit-learn's clusterers do, and the parameters follow."""
        counts = np.bincount(self.labels_, minlength=len(self.weights_))
        order = np.concatenate([np.flatnonzero(counts > 0), np.flatnonzero(counts == 0)])
        if np.array_equal(order, np.arange(len(order))):
            return
        renumber = np.empty_like(order)
        renumber[order] = np.arange(len(order))
        self.labels_ = renumber[self.labels_]
        self.weights_, self.means_ = self.weights_[order], self.means_[order]
        self.precisions_, self.precisions_cholesky_ = self.precisions_[order], self.precisions_cholesky_[order]

    def resample_parameters(self, X, labels, random_state=None):
        """One draw of (pi, mu, Lambda) from their posterior given the assignments ``labels`` of
        ``X``: the second half of a sweep, for samplers that set the assignments themselves (the
        naming game's listener, :mod:`vaegmm.naming_game`). Sets ``weights_``, ``means_``,
        ``precisions_`` and ``labels_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        labels : array-like of int of shape (n_samples,), in 0..n_components - 1
        random_state : None, int or numpy.random.Generator

        Returns
        -------
        self
        """
        X = self._validate_data(X, fitting=True)
        mean_prior, scale_inv, dof = self._resolve_prior(X)
        K = self._n_slots()
        alpha = np.broadcast_to(np.asarray(self._alpha_value(), dtype=float), (K,))
        labels = np.asarray(labels)
        if labels.shape != (X.shape[0],) or not np.issubdtype(labels.dtype, np.integer) or (
                labels.size and (labels.min() < 0 or labels.max() >= K)):
            raise ValueError(f"labels must be {X.shape[0]} integers in 0..{K - 1}, one per data point.")
        self._jitter_log = []
        shift = X.mean(axis=0)
        statistics = sufficient_statistics(X - shift, labels, K)
        self._set_parameters(*self._sample_parameters(
            statistics, alpha, mean_prior - shift, scale_inv, dof, shift, np.random.default_rng(random_state)))
        del self._jitter_log
        self.n_features_in_, self.n_components_ = X.shape[1], K
        self.labels_ = labels
        return self

    def fit_predict(self, X, y=None):
        """Fit and return the assignments drawn in the last sweep (``labels_``)."""
        return self.fit(X).labels_

    def _weighted_log_prob(self, X):
        """log pi_k + log N(x_n | mu_k, Lambda_k^-1), shape (n_samples, n_components), computed
        in blocks of rows so that no (n_samples, K, L) array is formed at once."""
        with np.errstate(divide="ignore"):
            log_weights = np.log(self.weights_)
        n_components, n_features = self.means_.shape
        rows = max(1, _BLOCK_FLOATS // (n_components * n_features))
        return np.concatenate([
            estimate_log_gaussian_prob(X[start:start + rows], self.means_, self.precisions_cholesky_) + log_weights
            for start in range(0, max(len(X), 1), rows)])

    def predict_proba(self, X):
        """Responsibilities p(z = k | x) under the reported state's parameters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_components), rows sum to 1.
        """
        X = self._validate_data(X, fitting=False)
        weighted = self._weighted_log_prob(X)
        return np.exp(weighted - logsumexp(weighted, axis=1, keepdims=True))

    def sample_assignments(self, X, random_state=None):
        """One draw of each datum's cluster from p(z_n = k | x_n, pi, mu, Lambda) under the current
        parameters: the first half of a Gibbs sweep (the naming game's speaker draws its signs so).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        random_state : None, int or numpy.random.Generator

        Returns
        -------
        labels : ndarray of int of shape (n_samples,)
        """
        X = self._validate_data(X, fitting=False)
        with np.errstate(divide="ignore"):
            log_weights = np.log(self.weights_)
        log_prob = estimate_log_gaussian_prob(X, self.means_, self.precisions_cholesky_) + log_weights
        return sample_categorical(log_prob, np.random.default_rng(random_state))  # (normalised on the way)

    def predict(self, X):
        """Most probable cluster of each row of X, shape (n_samples,)."""
        return np.argmax(self.predict_proba(X), axis=1)

    def score_samples(self, X):
        """log p(x_n) under the reported state's mixture, shape (n_samples,)."""
        X = self._validate_data(X, fitting=False)
        return logsumexp(self._weighted_log_prob(X), axis=1)

    def sample(self, n_samples=1, component=None, random_state=None):
        """Draw from the fitted mixture, or from one of its components.

        Parameters
        ----------
        n_samples : int
        component : int, default=None
            Draw every sample from N(means_[component], covariances_[component]); when None,
            components are drawn from ``weights_`` first.
        random_state : None, int or numpy.random.Generator

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        labels : ndarray of shape (n_samples,)
        """
        self._check_fitted()
        rng = np.random.default_rng(random_state)
        K = self.means_.shape[0]
        if component is None:
            labels = rng.choice(K, size=n_samples, p=self.weights_ / self.weights_.sum())
        else:
            if not (isinstance(component, numbers.Integral) and 0 <= component < K):
                raise ValueError(f"component must be an integer in [0, {K - 1}], got {component!r}.")
            labels = np.full(n_samples, component)
        eps = rng.standard_normal((n_samples, self.n_features_in_))[..., None]  # (n, L, 1)
        # x = mu + U^-T eps has covariance (U U^T)^-1 = Lambda^-1.
        offsets = np.linalg.solve(self.precisions_cholesky_[labels].transpose(0, 2, 1), eps)[..., 0]
        return self.means_[labels] + offsets, labels

    @classmethod
    def from_parameters(cls, means, precisions, weights, **params):
        """A fitted-looking model from saved parameters, for ``predict``/``sample`` only."""
        means = np.asarray(means, dtype=float)
        model = cls(n_components=means.shape[0], **params)
        precisions = np.asarray(precisions, dtype=float)
        model._set_parameters(np.log(np.asarray(weights, dtype=float)), means, precisions, cholesky(precisions))
        model.n_features_in_ = means.shape[1]
        return model
