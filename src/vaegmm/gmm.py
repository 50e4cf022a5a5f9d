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
and returns cluster parameters and assignments. Numerical kernels are private module-level
functions; every one is vectorised over data and clusters (no Python loop per datum, no
N x N array). Time per sweep is O(N K L^2), memory O(N K + N L + K L^2).
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.special import logsumexp

__all__ = ["GibbsGMM"]

_LOG_2PI = np.log(2.0 * np.pi)
# Relative jitter added to a Gram matrix whose Cholesky factorisation fails; multiplied by 10
# per retry up to _MAX_JITTER_TRIES times (so at most 1e-8 * 10^5 = 1e-3 of the mean diagonal).
_JITTER = 1e-8
_MAX_JITTER_TRIES = 6


# ---------------------------------------------------------------------------------------------
# Numerical kernels
# ---------------------------------------------------------------------------------------------
def _cholesky(matrices):
    """Lower Cholesky factors of a stack of SPD matrices, with bounded jitter on failure.

    Parameters
    ----------
    matrices : ndarray of shape (K, L, L)

    Returns
    -------
    chol : ndarray of shape (K, L, L), lower triangular.
    """
    try:
        return np.linalg.cholesky(matrices)
    except np.linalg.LinAlgError:
        pass
    dim = matrices.shape[-1]
    scale = np.abs(np.trace(matrices, axis1=-2, axis2=-1))[..., None, None] / dim
    scale = np.where(scale > 0, scale, 1.0)
    eye = np.eye(dim)
    for attempt in range(_MAX_JITTER_TRIES):
        try:
            return np.linalg.cholesky(matrices + (_JITTER * 10**attempt) * scale * eye)
        except np.linalg.LinAlgError:
            continue
    raise ValueError(
        "A cluster's precision matrix is not positive definite even with jitter; "
        "the latents are degenerate (constant or NaN): check the data, or increase the "
        "Wishart prior scale W or degrees of freedom nu."
    )


def _estimate_log_gaussian_prob(X, means, precisions_chol):
    """Log N(x_n | mu_k, Lambda_k^-1) for every datum and cluster.

    With Lambda_k = U_k U_k^T (U_k the lower Cholesky factor), the Mahalanobis term is
    ||U_k^T (x_n - mu_k)||^2 and log det Lambda_k = 2 sum(log diag U_k). All clusters go
    through one matrix product, so the cost is O(N K L^2) and no N x N array is formed.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    means : ndarray of shape (n_components, n_features)
    precisions_chol : ndarray of shape (n_components, n_features, n_features)

    Returns
    -------
    log_prob : ndarray of shape (n_samples, n_components)
    """
    n_samples, n_features = X.shape
    n_components = means.shape[0]
    # y[n, k] = U_k^T x_n - U_k^T mu_k, as one (N, L) @ (L, K*L) product.
    factors = precisions_chol.transpose(1, 0, 2).reshape(n_features, n_components * n_features)
    projected = (X @ factors).reshape(n_samples, n_components, n_features)  # (N, K, L)
    projected -= np.einsum("kl,klm->km", means, precisions_chol)[None]  # (N, K, L)
    mahalanobis = np.einsum("nkl,nkl->nk", projected, projected)  # (N, K)
    log_det = np.sum(np.log(np.diagonal(precisions_chol, axis1=1, axis2=2)), axis=1)  # (K,)
    return -0.5 * (n_features * _LOG_2PI + mahalanobis) + log_det


def _log_responsibilities(X, means, precisions_chol, log_weights):
    """Normalised log responsibilities log p(z_n = k | x_n, params), shape (N, K)."""
    weighted = _estimate_log_gaussian_prob(X, means, precisions_chol) + log_weights
    return weighted - logsumexp(weighted, axis=1, keepdims=True)


def _sample_categorical(log_prob, rng):
    """One draw per row from normalised log probabilities, by inverse CDF.

    Parameters
    ----------
    log_prob : ndarray of shape (n_samples, n_components), rows normalised in the log domain.
    rng : numpy.random.Generator

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
    """
    cdf = np.cumsum(np.exp(log_prob), axis=1)  # (N, K)
    uniform = rng.random(log_prob.shape[0]) * cdf[:, -1]  # scale by the row total (~1)
    labels = np.sum(cdf < uniform[:, None], axis=1)
    return np.minimum(labels, log_prob.shape[1] - 1)


def _sufficient_statistics(X, labels, n_components):
    """Counts, sums and scatter (sums of outer products) of the data in each cluster.

    Returns
    -------
    counts : ndarray of shape (K,)
    sums : ndarray of shape (K, L)
    outer_sums : ndarray of shape (K, L, L), sum_{n in k} x_n x_n^T
    """
    n_samples, n_features = X.shape
    one_hot = np.zeros((n_samples, n_components))
    one_hot[np.arange(n_samples), labels] = 1.0
    counts = one_hot.sum(axis=0)
    sums = one_hot.T @ X
    # sum_n [z_n = k] x_n x_n^T as one (K*L, N) @ (N, L) product.
    weighted = (one_hot[:, :, None] * X[:, None, :]).reshape(n_samples, -1)  # (N, K*L)
    outer_sums = (weighted.T @ X).reshape(n_components, n_features, n_features)
    return counts, sums, outer_sums


def _posterior_gauss_wishart(counts, sums, outer_sums, beta, mean_prior, wishart_scale_inv, dof):
    """Parameters of the conjugate Gauss–Wishart posterior of every cluster (PRML eq. 10.60–10.63).

    ``beta_hat = N_k + beta``, ``m_hat = (sum x + beta m) / beta_hat``,
    ``W_hat^-1 = sum x x^T + beta m m^T - beta_hat m_hat m_hat^T + W^-1``,
    ``nu_hat = N_k + nu``.

    Returns
    -------
    beta_hat : ndarray of shape (K,)
    m_hat : ndarray of shape (K, L)
    scale_inv_hat : ndarray of shape (K, L, L), W_hat^-1
    dof_hat : ndarray of shape (K,)
    """
    beta_hat = counts + beta
    m_hat = (sums + beta * mean_prior) / beta_hat[:, None]
    scale_inv_hat = (
        outer_sums
        + beta * np.outer(mean_prior, mean_prior)
        - beta_hat[:, None, None] * np.einsum("ki,kj->kij", m_hat, m_hat)
        + wishart_scale_inv
    )
    # Symmetrise against round-off before factorising.
    scale_inv_hat = 0.5 * (scale_inv_hat + scale_inv_hat.transpose(0, 2, 1))
    return beta_hat, m_hat, scale_inv_hat, counts + dof


def _sample_wishart(scale_inv_chol, dof, rng):
    """Draw Lambda_k ~ Wishart(W_k, nu_k) for every k by the Bartlett decomposition.

    With W_k^-1 = P_k P_k^T (P_k lower), C_k = P_k^-T satisfies C_k C_k^T = W_k, and
    Lambda_k = C_k A_k A_k^T C_k^T where A_k is lower triangular with
    A_ii ~ sqrt(chi2(nu_k - i)) (i = 0..L-1) and A_ij ~ N(0, 1) below the diagonal
    (Bartlett 1933; Anderson, An Introduction to Multivariate Statistical Analysis, §7.2).

    Parameters
    ----------
    scale_inv_chol : ndarray of shape (K, L, L), lower Cholesky factors of W_k^-1.
    dof : ndarray of shape (K,), nu_k > L - 1.
    rng : numpy.random.Generator

    Returns
    -------
    precisions : ndarray of shape (K, L, L)
    """
    n_components, n_features, _ = scale_inv_chol.shape
    bartlett = np.tril(rng.standard_normal((n_components, n_features, n_features)), k=-1)
    chi2_dof = dof[:, None] - np.arange(n_features)[None, :]  # (K, L)
    diag = np.sqrt(rng.chisquare(chi2_dof))  # (K, L)
    bartlett[:, np.arange(n_features), np.arange(n_features)] = diag
    # C A = P^-T A, solved rather than inverted.
    factor = np.linalg.solve(scale_inv_chol.transpose(0, 2, 1), bartlett)  # (K, L, L)
    precisions = factor @ factor.transpose(0, 2, 1)
    return 0.5 * (precisions + precisions.transpose(0, 2, 1))


def _sample_means(m_hat, beta_hat, precisions_chol, rng):
    """Draw mu_k ~ Normal(m_hat_k, (beta_hat_k Lambda_k)^-1) for every k.

    With Lambda_k = U_k U_k^T, mu_k = m_hat_k + U_k^-T eps / sqrt(beta_hat_k), eps ~ N(0, I).
    """
    eps = rng.standard_normal(m_hat.shape)[..., None]  # (K, L, 1)
    offset = np.linalg.solve(precisions_chol.transpose(0, 2, 1), eps)[..., 0]  # (K, L)
    return m_hat + offset / np.sqrt(beta_hat)[:, None]


def _sample_log_dirichlet(concentration, rng):
    """log of a Dirichlet draw, via Gamma variates normalised in the log domain."""
    gammas = rng.standard_gamma(concentration)
    with np.errstate(divide="ignore"):
        log_gammas = np.log(gammas)
    # A Gamma draw with a tiny shape can underflow to 0; floor it far below any real weight.
    log_gammas = np.maximum(log_gammas, -700.0)
    return log_gammas - logsumexp(log_gammas)


# ---------------------------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------------------------
class GibbsGMM:
    """Bayesian Gaussian mixture with a Gauss–Wishart prior, fitted by blocked Gibbs sampling.

    Parameters
    ----------
    n_components : int, default=10
        Number of clusters K.
    n_sweeps : int, default=100
        Number of Gibbs sweeps run by :meth:`fit`.
    alpha : float, default=0.3
        Concentration of the symmetric Dirichlet prior on the weights.
    beta : float, default=1.0
        Scale of the prior precision of the means, mu_k ~ N(m, (beta Lambda_k)^-1).
    mean_prior : array-like of shape (n_features,), default=None
        Prior mean m of the cluster means; zeros when None.
    wishart_scale : float or array-like of shape (n_features, n_features), default=0.55
        Scale matrix W of the Wishart prior; a float c means c * I.
    wishart_dof : float, default=None
        Degrees of freedom nu of the Wishart prior (> n_features - 1); n_features when None.
    init : {"prior", "kmeans++"}, default="prior"
        How the chain starts. "prior" draws (pi, mu, Lambda) from the prior, as the reference
        implementation does; "kmeans++" places the means on data points chosen by k-means++
        seeding with the prior's expected precision nu W, which is robust to latents whose
        scale differs from the prior's.
    random_state : None, int or numpy.random.Generator, default=None
        Seed or generator; the sampler uses one ``numpy.random.Generator`` and nothing else.
    callback : callable, default=None
        Called after every sweep as ``callback(sweep, labels, model)``, where ``sweep`` counts
        from 0, ``labels`` is the assignment drawn in that sweep and ``model`` is this estimator
        with that sweep's parameters set. Used to record metrics per sweep.
    progress : bool, default=False
        Show a tqdm progress bar over sweeps.

    Attributes
    ----------
    means_ : ndarray of shape (n_components, n_features)
        Cluster means of the last sweep.
    precisions_ : ndarray of shape (n_components, n_features, n_features)
        Cluster precision matrices Lambda_k of the last sweep.
    precisions_cholesky_ : ndarray of shape (n_components, n_features, n_features)
        Lower Cholesky factors of ``precisions_``.
    covariances_ : ndarray of shape (n_components, n_features, n_features)
        Inverses of ``precisions_``.
    weights_ : ndarray of shape (n_components,)
        Mixture weights pi of the last sweep.
    labels_ : ndarray of shape (n_samples,)
        Assignments z drawn in the last sweep.
    log_likelihood_ : ndarray of shape (n_sweeps,)
        log p(X | mu, Lambda, pi) under the parameters each sweep started from.
    n_features_in_ : int
    """

    def __init__(
        self,
        n_components=10,
        *,
        n_sweeps=100,
        alpha=0.3,
        beta=1.0,
        mean_prior=None,
        wishart_scale=0.55,
        wishart_dof=None,
        init="prior",
        random_state=None,
        callback=None,
        progress=False,
    ):
        self.n_components = n_components
        self.n_sweeps = n_sweeps
        self.alpha = alpha
        self.beta = beta
        self.mean_prior = mean_prior
        self.wishart_scale = wishart_scale
        self.wishart_dof = wishart_dof
        self.init = init
        self.random_state = random_state
        self.callback = callback
        self.progress = progress

    # -- input checks --------------------------------------------------------------------------
    def _validate_data(self, X, *, fitting):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"Expected a 2-D array of shape (n_samples, n_features), got shape {X.shape}.")
        if not np.all(np.isfinite(X)):
            raise ValueError("The data contain NaN or infinite values; remove or fix them before fitting.")
        if fitting:
            if X.shape[0] < self.n_components:
                raise ValueError(
                    f"Got {X.shape[0]} data points but n_components={self.n_components}; "
                    "use at least as many data points as clusters, or fewer clusters."
                )
        else:
            self._check_fitted()
            if X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}."
                )
        return X

    def _check_fitted(self):
        if not hasattr(self, "means_"):
            raise RuntimeError("This GibbsGMM is not fitted yet; call fit(X) first.")

    def _resolve_prior(self, n_features):
        """Check the hyperparameters and return (m, W^-1, nu) for data of ``n_features``."""
        if not (isinstance(self.n_components, numbers.Integral) and self.n_components >= 1):
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}.")
        if not (isinstance(self.n_sweeps, numbers.Integral) and self.n_sweeps >= 1):
            raise ValueError(f"n_sweeps must be a positive integer, got {self.n_sweeps!r}.")
        if not np.all(np.asarray(self.alpha, dtype=float) > 0):
            raise ValueError(f"alpha (Dirichlet concentration) must be positive, got {self.alpha!r}.")
        if not self.beta > 0:
            raise ValueError(f"beta must be positive, got {self.beta!r}.")
        mean_prior = (
            np.zeros(n_features) if self.mean_prior is None else np.asarray(self.mean_prior, dtype=float)
        )
        if mean_prior.shape != (n_features,):
            raise ValueError(f"mean_prior must have shape ({n_features},), got {mean_prior.shape}.")
        scale = np.asarray(self.wishart_scale, dtype=float)
        if scale.ndim == 0:
            if not scale > 0:
                raise ValueError(f"wishart_scale must be positive, got {self.wishart_scale!r}.")
            scale = scale * np.eye(n_features)
        if scale.shape != (n_features, n_features):
            raise ValueError(f"wishart_scale must be a float or a ({n_features}, {n_features}) matrix.")
        try:
            np.linalg.cholesky(scale)
        except np.linalg.LinAlgError:
            raise ValueError("wishart_scale must be symmetric positive definite.") from None
        dof = float(n_features if self.wishart_dof is None else self.wishart_dof)
        if not dof > n_features - 1:
            raise ValueError(
                f"wishart_dof must exceed n_features - 1 = {n_features - 1}, got {dof:g}."
            )
        if self.init not in ("prior", "kmeans++"):
            raise ValueError(f"init must be 'prior' or 'kmeans++', got {self.init!r}.")
        return mean_prior, np.linalg.inv(scale), dof

    # -- the sampler ---------------------------------------------------------------------------
    def _initialize(self, X, rng, mean_prior, scale_inv, dof):
        """Starting (log_weights, means, precisions) of the chain."""
        n_samples, n_features = X.shape
        K = self.n_components
        log_weights = _sample_log_dirichlet(np.broadcast_to(np.asarray(self.alpha, float), (K,)), rng)
        scale_inv_chol = np.broadcast_to(np.linalg.cholesky(scale_inv), (K, n_features, n_features))
        if self.init == "prior":
            precisions = _sample_wishart(scale_inv_chol, np.full(K, dof), rng)
            means = _sample_means(
                np.broadcast_to(mean_prior, (K, n_features)), np.full(K, self.beta),
                _cholesky(precisions), rng,
            )
        else:  # k-means++ seeding (Arthur & Vassilvitskii 2007) for the means
            precisions = np.broadcast_to(dof * np.linalg.inv(scale_inv), (K, n_features, n_features)).copy()
            means = np.empty((K, n_features))
            means[0] = X[rng.integers(n_samples)]
            closest = np.sum((X - means[0]) ** 2, axis=1)
            for k in range(1, K):
                total = closest.sum()
                index = rng.choice(n_samples, p=closest / total) if total > 0 else rng.integers(n_samples)
                means[k] = X[index]
                closest = np.minimum(closest, np.sum((X - means[k]) ** 2, axis=1))
        return log_weights, means, precisions

    def _set_parameters(self, log_weights, means, precisions, precisions_chol):
        self.weights_ = np.exp(log_weights)
        self.means_ = means
        self.precisions_ = precisions
        self.precisions_cholesky_ = precisions_chol

    @property
    def covariances_(self):
        self._check_fitted()
        return np.linalg.inv(self.precisions_)

    def fit(self, X, y=None):
        """Run ``n_sweeps`` Gibbs sweeps on X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        X = self._validate_data(X, fitting=True)
        n_samples, n_features = X.shape
        mean_prior, scale_inv, dof = self._resolve_prior(n_features)
        rng = np.random.default_rng(self.random_state)
        K = self.n_components
        alpha = np.broadcast_to(np.asarray(self.alpha, dtype=float), (K,))
        self.n_features_in_ = n_features

        log_weights, means, precisions = self._initialize(X, rng, mean_prior, scale_inv, dof)
        precisions_chol = _cholesky(precisions)
        log_likelihood = np.empty(self.n_sweeps)
        sweeps = range(self.n_sweeps)
        if self.progress:
            from tqdm.auto import tqdm

            sweeps = tqdm(sweeps, desc="Gibbs sweeps", unit="sweep", leave=False)
        for sweep in sweeps:
            # z | x, mu, Lambda, pi
            weighted = _estimate_log_gaussian_prob(X, means, precisions_chol) + log_weights
            norm = logsumexp(weighted, axis=1, keepdims=True)
            log_likelihood[sweep] = norm.sum()
            labels = _sample_categorical(weighted - norm, rng)
            # pi | z
            counts, sums, outer_sums = _sufficient_statistics(X, labels, K)
            log_weights = _sample_log_dirichlet(alpha + counts, rng)
            # Lambda_k | x, z and mu_k | Lambda_k, x, z
            beta_hat, m_hat, scale_inv_hat, dof_hat = _posterior_gauss_wishart(
                counts, sums, outer_sums, self.beta, mean_prior, scale_inv, dof
            )
            precisions = _sample_wishart(_cholesky(scale_inv_hat), dof_hat, rng)
            precisions_chol = _cholesky(precisions)
            means = _sample_means(m_hat, beta_hat, precisions_chol, rng)
            self.labels_ = labels
            self._set_parameters(log_weights, means, precisions, precisions_chol)
            if self.callback is not None:
                self.callback(sweep, labels, self)
        self.log_likelihood_ = log_likelihood
        self.n_iter_ = self.n_sweeps
        return self

    def fit_predict(self, X, y=None):
        """Fit and return the assignments drawn in the last sweep (``labels_``)."""
        return self.fit(X).labels_

    def predict_proba(self, X):
        """Responsibilities p(z = k | x) under the last sweep's parameters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_components), rows sum to 1.
        """
        X = self._validate_data(X, fitting=False)
        with np.errstate(divide="ignore"):
            log_weights = np.log(self.weights_)
        return np.exp(_log_responsibilities(X, self.means_, self.precisions_cholesky_, log_weights))

    def predict(self, X):
        """Most probable cluster of each row of X, shape (n_samples,)."""
        return np.argmax(self.predict_proba(X), axis=1)

    def score_samples(self, X):
        """log p(x_n) under the last sweep's mixture, shape (n_samples,)."""
        X = self._validate_data(X, fitting=False)
        with np.errstate(divide="ignore"):
            log_weights = np.log(self.weights_)
        weighted = _estimate_log_gaussian_prob(X, self.means_, self.precisions_cholesky_) + log_weights
        return logsumexp(weighted, axis=1)

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
        model._set_parameters(np.log(np.asarray(weights, dtype=float)), means, precisions, _cholesky(precisions))
        model.n_features_in_ = means.shape[1]
        return model
