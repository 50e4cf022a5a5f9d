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

import contextlib
import numbers
import warnings

import numpy as np
from scipy.special import logsumexp

__all__ = ["GibbsGMM"]

_LOG_2PI = np.log(2.0 * np.pi)
# Relative jitter added to a Gram matrix whose Cholesky factorisation fails; multiplied by 10
# per retry up to _MAX_JITTER_TRIES times (so at most 1e-8 * 10^5 = 1e-3 of the mean diagonal).
_JITTER = 1e-8
_MAX_JITTER_TRIES = 6
# Below this many multiply-adds per matrix product of a sweep (N * P * K), BLAS threads cost
# more in synchronisation than they save (and collapse when another process holds a core):
# such sweeps run their products on one BLAS thread. Measured on a 2-core machine, where
# N = 10k, K = 10, L = 12 (9e6) took 3.1 ms single-threaded and 2.2-16 ms with two threads.
EM_RESTARTS = 10  # EM fits of init="em"; the most likely one starts the chain
_SINGLE_THREAD_WORK = 2e7


# ---------------------------------------------------------------------------------------------
# Numerical kernels
# ---------------------------------------------------------------------------------------------
def _cholesky(matrices, jitter_log=None):
    """Lower Cholesky factors of a stack of SPD matrices, with bounded jitter on failure.

    On failure, ``c * mean(diag) * I`` is added with c = 1e-8, 1e-7, ..., 1e-3 until the
    factorisation succeeds; each c used is appended to ``jitter_log`` (a list) when given.

    Parameters
    ----------
    matrices : ndarray of shape (K, L, L)
    jitter_log : list, default=None

    Returns
    -------
    chol : ndarray of shape (K, L, L), lower triangular.
    """
    try:
        return np.linalg.cholesky(matrices)
    except np.linalg.LinAlgError:
        return _cholesky_with_jitter(matrices, jitter_log)


def _cholesky_with_jitter(matrices, jitter_log):
    """The retries of :func:`_cholesky` with growing jitter, for matrices that failed without."""
    dim = matrices.shape[-1]
    scale = np.abs(np.trace(matrices, axis1=-2, axis2=-1))[..., None, None] / dim
    scale = np.where(scale > 0, scale, 1.0)
    eye = np.eye(dim)
    for attempt in range(_MAX_JITTER_TRIES):
        relative = _JITTER * 10**attempt
        try:
            chol = np.linalg.cholesky(matrices + relative * scale * eye)
        except np.linalg.LinAlgError:
            continue
        if jitter_log is not None:
            jitter_log.append(relative)
        return chol
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
    projected -= (means[:, None, :] @ precisions_chol)[None, :, 0, :]  # (N, K, L)
    np.square(projected, out=projected)
    mahalanobis = projected.sum(axis=2)  # (N, K)
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
    log_prob_t = np.ascontiguousarray(np.asarray(log_prob, dtype=np.float64).T)  # (K, N), a copy
    labels, _ = _sample_categorical_columns(log_prob_t, rng)
    return labels


def _sample_categorical_columns(weighted, rng):
    """One draw per column from unnormalised log probabilities, by inverse CDF; in place.

    The same draw as :func:`_sample_categorical` (one uniform per datum, counted against the
    cumulative sums), on the transposed layout the sampler keeps, with the log normaliser
    (log-sum-exp) of each column computed on the way rather than a second time.

    Parameters
    ----------
    weighted : ndarray of shape (n_components, n_samples), C-contiguous float64
        log pi_k + log N(x_n | ...), or any log weights; overwritten by the cumulative sums.
    rng : numpy.random.Generator

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
    log_norm : ndarray of shape (n_samples,), log sum_k exp(weighted[k, n])
    """
    n_components, n_samples = weighted.shape
    column_max = weighted.max(axis=0)  # (N,)
    weighted -= column_max
    np.exp(weighted, out=weighted)
    for k in range(1, n_components):  # cumulative sum over rows, one vector add each
        np.add(weighted[k - 1], weighted[k], out=weighted[k])
    total = weighted[-1].copy()  # (N,), >= 1 (the maximum contributes exp(0))
    uniform = rng.random(n_samples) * total  # scale by the column total
    labels = np.less(weighted, uniform).sum(axis=0)  # (N,)
    np.minimum(labels, n_components - 1, out=labels)
    log_norm = np.log(total)
    log_norm += column_max
    return labels.astype(np.int64, copy=False), log_norm


def _sufficient_statistics(X, labels, n_components):
    """Counts, sums and scatter (sums of outer products) of the data in each cluster.

    Returns
    -------
    counts : ndarray of shape (K,)
    sums : ndarray of shape (K, L)
    outer_sums : ndarray of shape (K, L, L), sum_{n in k} x_n x_n^T
    """
    n_samples, n_features = X.shape
    counts = np.bincount(labels, minlength=n_components).astype(np.float64)
    # Sort the data by label once; each cluster is then one contiguous slice, and its scatter
    # one (L, N_k) @ (N_k, L) product (a loop over clusters, none over data).
    order = np.argsort(labels, kind="stable")
    sorted_X = X[order]
    bounds = np.concatenate(([0], np.cumsum(counts.astype(np.int64))))
    sums = np.zeros((n_components, n_features))
    outer_sums = np.zeros((n_components, n_features, n_features))
    for k in range(n_components):
        members = sorted_X[bounds[k] : bounds[k + 1]]  # (N_k, L)
        if len(members):
            sums[k] = members.sum(axis=0)
            outer_sums[k] = members.T @ members
    return counts, sums, outer_sums


def _quadratic_features(X):
    """Monomials of degree <= 2 of every datum, one row per monomial.

    Rows are x_i x_j for i <= j (in ``np.triu_indices`` order), then x_i, then 1; so a quadratic
    form in x for every cluster is one (K, P) @ (P, N) product (:func:`_log_gaussian_coefficients`),
    and the clusters' counts, sums and scatter matrices one (P, N) @ (N, K) product
    (:func:`_sufficient_statistics_from_features`).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)

    Returns
    -------
    features : ndarray of shape (L (L + 1) / 2 + L + 1, n_samples), C-contiguous
    """
    n_samples, n_features = X.shape
    n_pairs = n_features * (n_features + 1) // 2
    features = np.empty((n_pairs + n_features + 1, n_samples))
    columns = np.ascontiguousarray(X.T)  # (L, N)
    row = 0
    for i in range(n_features):
        np.multiply(columns[i], columns[i:], out=features[row : row + n_features - i])
        row += n_features - i
    features[n_pairs : n_pairs + n_features] = columns
    features[-1] = 1.0
    return features


def _use_quadratic_features(n_features, n_components):
    """Whether the monomial form is cheaper than the Cholesky form (P <= K L), in time and memory."""
    return n_features * (n_features + 3) // 2 + 1 <= n_components * n_features


def _log_gaussian_coefficients(means, precisions_chol, log_weights):
    """Coefficients of log pi_k + log N(x | mu_k, Lambda_k^-1) on the monomials of x.

    With Lambda_k = U_k U_k^T,
    ``log N = -1/2 (L log 2 pi + x^T Lambda x - 2 mu^T Lambda x + mu^T Lambda mu) + sum log diag U``;
    the coefficient of x_i x_j (i < j) is -Lambda_ij (the pair appears twice in x^T Lambda x),
    that of x_i^2 is -Lambda_ii / 2, that of x_i is (Lambda mu)_i.

    Parameters
    ----------
    means : ndarray of shape (n_components, n_features)
    precisions_chol : ndarray of shape (n_components, n_features, n_features)
    log_weights : ndarray of shape (n_components,)

    Returns
    -------
    coefficients : ndarray of shape (n_components, L (L + 1) / 2 + L + 1), rows ordered as the
        rows of :func:`_quadratic_features`.
    """
    n_components, n_features = means.shape
    precisions = precisions_chol @ precisions_chol.transpose(0, 2, 1)  # (K, L, L), as factored
    rows, cols = np.triu_indices(n_features)
    quadratic = -precisions[:, rows, cols]  # (K, P2)
    quadratic[:, rows == cols] *= 0.5
    linear = (precisions @ means[:, :, None])[:, :, 0]  # (K, L), Lambda mu
    log_det = np.sum(np.log(np.diagonal(precisions_chol, axis1=1, axis2=2)), axis=1)  # (K,)
    constant = -0.5 * (n_features * _LOG_2PI + np.sum(means * linear, axis=1)) + log_det + log_weights
    return np.concatenate([quadratic, linear, constant[:, None]], axis=1)


def _sufficient_statistics_from_features(features, labels, n_components, n_features):
    """:func:`_sufficient_statistics` from the monomials of the data, in one matrix product.

    Parameters
    ----------
    features : ndarray of shape (P, n_samples), from :func:`_quadratic_features`
    labels : ndarray of shape (n_samples,)

    Returns
    -------
    counts : ndarray of shape (K,)
    sums : ndarray of shape (K, L)
    outer_sums : ndarray of shape (K, L, L)
    """
    n_samples = features.shape[1]
    one_hot = np.zeros((n_samples, n_components))
    one_hot[np.arange(n_samples), labels] = 1.0
    return _statistics_from_moments(features @ one_hot, n_features)  # (P, K) moments


def _statistics_from_moments(moments, n_features):
    """Counts (K,), sums (K, L) and scatter matrices (K, L, L) from the per-cluster sums of the
    monomials of :func:`_quadratic_features`, ``moments`` of shape (P, K)."""
    n_components = moments.shape[1]
    n_pairs = n_features * (n_features + 1) // 2
    rows, cols = np.triu_indices(n_features)
    outer_sums = np.empty((n_components, n_features, n_features))
    outer_sums[:, rows, cols] = moments[:n_pairs].T
    outer_sums[:, cols, rows] = moments[:n_pairs].T
    sums = moments[n_pairs : n_pairs + n_features].T.copy()
    # Counts are sums of ones: exact integers in float64 below 2^53.
    return moments[-1].copy(), sums, outer_sums


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
    # log-sum-exp by hand: scipy's is ~100x slower on a vector of K numbers.
    largest = log_gammas.max()
    return log_gammas - (largest + np.log(np.sum(np.exp(log_gammas - largest))))


class _NumpySweepData:
    """The per-datum half of a sweep in NumPy: the data, and the two O(N K L^2) steps on them.

    Holds the (centred) data as monomials (:func:`_quadratic_features`) where that form is
    cheaper, else as they are. The K x L x L parameter algebra stays in :class:`GibbsGMM`.
    ``gmm_torch.TorchSweepData`` has the same two methods.
    """

    def __init__(self, X, n_components):
        self.n_samples, self.n_features = X.shape
        self.n_components = n_components
        if _use_quadratic_features(self.n_features, n_components):
            self.X, self.features = None, _quadratic_features(X)  # (P, N), once for every sweep
        else:
            self.X, self.features = X, None

    def sample_labels(self, means, precisions_chol, log_weights, rng):
        """Draw z; return labels of shape (N,) and log p(X | parameters) (a float)."""
        if self.features is not None:
            weighted = _log_gaussian_coefficients(means, precisions_chol, log_weights) @ self.features  # (K, N)
        else:
            weighted = _estimate_log_gaussian_prob(self.X, means, precisions_chol).T + log_weights[:, None]
            weighted = np.ascontiguousarray(weighted)  # (K, N)
        labels, log_norm = _sample_categorical_columns(weighted, rng)
        return labels, float(log_norm.sum())

    def sufficient_statistics(self, labels):
        """counts (K,), sums (K, L), outer_sums (K, L, L) of the data in each cluster."""
        if self.features is not None:
            return _sufficient_statistics_from_features(self.features, labels, self.n_components, self.n_features)
        return _sufficient_statistics(self.X, labels, self.n_components)


def _blas_threads(limit):
    """Context limiting the BLAS thread pool to ``limit`` threads (no-op for None or without threadpoolctl)."""
    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")


# ---------------------------------------------------------------------------------------------
# Estimator
# ---------------------------------------------------------------------------------------------
def _em_labels(X, n_components, restarts, seed, reg_covar=None):
    """Assignments of the most likely of ``restarts`` EM fits (scikit-learn, k-means starts);
    ``reg_covar`` defaults to 1e-6 of the data's mean variance."""
    from sklearn.mixture import GaussianMixture

    if reg_covar is None:
        reg_covar = 1e-6 * (float(np.mean(np.var(X, axis=0))) or 1.0)
    mixture = GaussianMixture(n_components, covariance_type="full", n_init=restarts, random_state=seed,
                              reg_covar=reg_covar)
    return mixture.fit(X).predict(X).astype(np.int64)


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
        scale differs from the prior's. "em" starts from the assignments of the most likely of
        ``EM_RESTARTS`` k-means-started EM fits of a full-covariance mixture (a stable mode,
        so that the chain's luck does not decide the partition), drawing the first (pi, mu,
        Lambda) from their posterior given them.
    random_state : None, int or numpy.random.Generator, default=None
        Seed or generator; the sampler uses one ``numpy.random.Generator`` and nothing else.
    callback : callable, default=None
        Called after every sweep as ``callback(sweep, labels, model)``, where ``sweep`` counts
        from 0, ``labels`` is the assignment drawn in that sweep and ``model`` is this estimator
        with that sweep's parameters set. Used to record metrics per sweep.
    progress : bool, default=False
        Show a tqdm progress bar over sweeps.
    device : None, str or torch.device, default=None
        None: the NumPy sampler. A torch device ("cuda", "cuda:1", "cpu"): the per-datum work of
        every sweep (log densities, the draw of z, sufficient statistics) runs in torch on that
        device (:mod:`vaegmm.gmm_torch`), the K x L x L parameter algebra stays in NumPy; the
        chain has the same distribution, but not the same numbers as the NumPy sampler's for
        one seed. Attributes are NumPy arrays either way.

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
    n_jitter_ : int
        How many Cholesky factorisations of the fit needed jitter (0 normally); a
        RuntimeWarning says so when it is not 0.
    max_jitter_ : float
        The largest jitter used, relative to the mean diagonal (at most 1e-3).
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
        device=None,
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
        self.device = device

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
        if self.init not in ("prior", "kmeans++", "em"):
            raise ValueError(f"init must be 'prior', 'kmeans++' or 'em', got {self.init!r}.")
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
                _cholesky(precisions, self._jitter_log), rng,
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

    def _initialize_from_labels(self, X, labels, rng, alpha, mean_prior, scale_inv, dof):
        """Starting (log_weights, means, precisions) drawn from their posterior given ``labels``."""
        labels = np.asarray(labels)
        if labels.shape != (X.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"init_labels must be {X.shape[0]} integers, one per data point; got shape "
                             f"{labels.shape} of {labels.dtype}.")
        if labels.min() < 0 or labels.max() >= self.n_components:
            raise ValueError(f"init_labels must lie in 0..{self.n_components - 1}; got {labels.min()}..{labels.max()}.")
        shift = X.mean(axis=0)  # centred, as in the sweeps
        statistics = _sufficient_statistics(X - shift, labels, self.n_components)
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
        log_weights = _sample_log_dirichlet(alpha + counts, rng)
        beta_hat, m_hat, scale_inv_hat, dof_hat = _posterior_gauss_wishart(
            counts, sums, outer_sums, self.beta, centred_mean_prior, scale_inv, dof
        )
        precisions = _sample_wishart(_cholesky(scale_inv_hat, self._jitter_log), dof_hat, rng)
        precisions_chol = _cholesky(precisions, self._jitter_log)
        means = _sample_means(m_hat + shift, beta_hat, precisions_chol, rng)
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
        n_samples, n_features = X.shape
        mean_prior, scale_inv, dof = self._resolve_prior(n_features)
        rng = np.random.default_rng(self.random_state)
        K = self.n_components
        alpha = np.broadcast_to(np.asarray(self.alpha, dtype=float), (K,))
        self.n_features_in_ = n_features

        self._jitter_log = []
        if init_labels is None and self.init == "em":
            init_labels = _em_labels(X, K, EM_RESTARTS, int(rng.integers(2**31 - 1)))
        if init_labels is None:
            start = self._initialize(X, rng, mean_prior, scale_inv, dof)
        else:
            start = self._initialize_from_labels(X, init_labels, rng, alpha, mean_prior, scale_inv, dof)
        n_monomials = n_features * (n_features + 3) // 2 + 1
        with _blas_threads(1 if n_samples * n_monomials * K < _SINGLE_THREAD_WORK else None):
            self.log_likelihood_ = self._run_sweeps(X, rng, start, alpha, mean_prior, scale_inv, dof)
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

    def _run_sweeps(self, X, rng, start, alpha, mean_prior, scale_inv, dof):
        """The Gibbs sweeps of :meth:`fit` from ``start = (log_weights, means, precisions)``.

        Returns
        -------
        log_likelihood : ndarray of shape (n_sweeps,)
        """
        n_samples, n_features = X.shape
        K = self.n_components
        log_weights, means, precisions = start
        precisions_chol = _cholesky(precisions, self._jitter_log)
        # Work in coordinates centred on the data mean: the Gauss-Wishart posterior is
        # translation-equivariant (m_hat shifts, W_hat and nu_hat do not change), and centring
        # keeps the sufficient statistics and the expanded quadratic form accurate.
        shift = X.mean(axis=0)  # (L,)
        centred_mean_prior = mean_prior - shift
        if self.device is None:
            data = _NumpySweepData(X - shift, K)
        else:
            from .gmm_torch import TorchSweepData

            data = TorchSweepData(X - shift, K, self.device, seed=int(rng.integers(2**63 - 1)))
        log_likelihood = np.empty(self.n_sweeps)
        sweeps = range(self.n_sweeps)
        if self.progress:
            from tqdm.auto import tqdm

            sweeps = tqdm(sweeps, desc="Gibbs sweeps", unit="sweep", leave=False)
        for sweep in sweeps:
            # z | x, mu, Lambda, pi: the O(N K L^2) work, on the data's backend.
            labels, log_likelihood[sweep] = data.sample_labels(means - shift, precisions_chol, log_weights, rng)
            # pi | z
            statistics = data.sufficient_statistics(labels)
            log_weights, means, precisions, precisions_chol = self._sample_parameters(
                statistics, alpha, centred_mean_prior, scale_inv, dof, shift, rng
            )
            self.labels_ = labels
            self._set_parameters(log_weights, means, precisions, precisions_chol)
            if self.callback is not None:
                self.callback(sweep, labels, self)
        return log_likelihood

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
