"""The numerical kernels of the Gibbs sampler (:mod:`vaegmm.gmm`), shared by the NumPy sweep and
the torch sweep (:mod:`vaegmm.gmm_torch`): log densities, categorical draws, sufficient
statistics (directly or from the monomials of degree <= 2 of the data), the Gauss-Wishart
posterior and its Wishart, Normal and Dirichlet draws, and the EM start.

Every kernel is vectorised over data and clusters (no Python loop per datum, no N x N array);
every array is float64. They know nothing of the VAE or of the estimator's state.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "data_scaled_prior",
    "log_joint",
    "log_joint_constant",
    "EM_RESTARTS",
    "SINGLE_THREAD_WORK",
    "NumpySweepData",
    "cholesky",
    "cholesky_with_jitter",
    "em_labels",
    "estimate_log_gaussian_prob",
    "log_gaussian_coefficients",
    "log_responsibilities",
    "posterior_gauss_wishart",
    "quadratic_features",
    "sample_categorical",
    "sample_categorical_columns",
    "sample_log_dirichlet",
    "sample_means",
    "sample_wishart",
    "statistics_from_moments",
    "sufficient_statistics",
    "sufficient_statistics_from_features",
    "use_quadratic_features",
]

_LOG_2PI = np.log(2.0 * np.pi)
_LOG_TINY = -700.0  # exp(-700) ~ 1e-304, above the subnormal floats (< 2.2e-308)
# Relative jitter added to a Gram matrix whose Cholesky factorisation fails; multiplied by 10
# per retry up to _MAX_JITTER_TRIES times (so at most 1e-8 * 10^5 = 1e-3 of the mean diagonal).
_JITTER = 1e-8
_MAX_JITTER_TRIES = 6
EM_RESTARTS = 10  # EM fits of init="em"; the most likely one starts the chain
# Below this many multiply-adds per matrix product of a sweep (N * P * K), BLAS threads cost
# more in synchronisation than they save (and collapse when another process holds a core):
# such sweeps run their products on one BLAS thread. Measured on a 2-core machine, where
# N = 10k, K = 10, L = 12 (9e6) took 3.1 ms single-threaded and 2.2-16 ms with two threads.
SINGLE_THREAD_WORK = 2e7


def cholesky(matrices, jitter_log=None):
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
        return cholesky_with_jitter(matrices, jitter_log)


def cholesky_with_jitter(matrices, jitter_log):
    """The retries of :func:`cholesky` with growing jitter, for matrices that failed without."""
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


def estimate_log_gaussian_prob(X, means, precisions_chol):
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


def log_responsibilities(X, means, precisions_chol, log_weights):
    """Normalised log responsibilities log p(z_n = k | x_n, params), shape (N, K)."""
    weighted = estimate_log_gaussian_prob(X, means, precisions_chol) + log_weights
    return weighted - logsumexp(weighted, axis=1, keepdims=True)


def sample_categorical(log_prob, rng):
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
    labels, _ = sample_categorical_columns(log_prob_t, rng)
    return labels


def sample_categorical_columns(weighted, rng):
    """One draw per column from unnormalised log probabilities, by inverse CDF; in place.

    The same draw as :func:`sample_categorical` (one uniform per datum, counted against the
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
    # exp below -708 gives subnormal floats, which cost the CPU 10-100x more (a cluster emptied
    # under a sparse prior has log pi_k near -709); probabilities below e^-700 cannot change a
    # draw (the cumulative sums are >= 1 and a uniform has 53 bits), so they are raised to it.
    np.maximum(weighted, _LOG_TINY, out=weighted)
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


def sufficient_statistics(X, labels, n_components):
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


def quadratic_features(X):
    """Monomials of degree <= 2 of every datum, one row per monomial.

    Rows are x_i x_j for i <= j (in ``np.triu_indices`` order), then x_i, then 1; so a quadratic
    form in x for every cluster is one (K, P) @ (P, N) product (:func:`log_gaussian_coefficients`),
    and the clusters' counts, sums and scatter matrices one (P, N) @ (N, K) product
    (:func:`sufficient_statistics_from_features`).

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


def use_quadratic_features(n_features, n_components):
    """Whether the monomial form is cheaper than the Cholesky form (P <= K L), in time and memory."""
    return n_features * (n_features + 3) // 2 + 1 <= n_components * n_features


def log_gaussian_coefficients(means, precisions_chol, log_weights):
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
        rows of :func:`quadratic_features`.
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


def sufficient_statistics_from_features(features, labels, n_components, n_features):
    """:func:`sufficient_statistics` from the monomials of the data, in one matrix product.

    Parameters
    ----------
    features : ndarray of shape (P, n_samples), from :func:`quadratic_features`
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
    return statistics_from_moments(features @ one_hot, n_features)  # (P, K) moments


def statistics_from_moments(moments, n_features):
    """Counts (K,), sums (K, L) and scatter matrices (K, L, L) from the per-cluster sums of the
    monomials of :func:`quadratic_features`, ``moments`` of shape (P, K)."""
    n_components = moments.shape[1]
    n_pairs = n_features * (n_features + 1) // 2
    rows, cols = np.triu_indices(n_features)
    outer_sums = np.empty((n_components, n_features, n_features))
    outer_sums[:, rows, cols] = moments[:n_pairs].T
    outer_sums[:, cols, rows] = moments[:n_pairs].T
    sums = moments[n_pairs : n_pairs + n_features].T.copy()
    # Counts are sums of ones: exact integers in float64 below 2^53.
    return moments[-1].copy(), sums, outer_sums


def posterior_gauss_wishart(counts, sums, outer_sums, beta, mean_prior, wishart_scale_inv, dof):
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


def log_joint(statistics, log_weights, means, precisions, precisions_chol, alpha, beta, mean_prior,
              wishart_scale_inv, dof, constant=None):
    """log p(X, z, pi, mu, Lambda) of one state of the chain, from the statistics of z.

    The sum of log p(z | pi) = sum_k N_k log pi_k, the complete-data log-likelihood
    sum_k sum_{n in k} log N(x_n | mu_k, Lambda_k^-1), log Dirichlet(pi | alpha) and, per
    cluster, log N(mu_k | m, (beta Lambda_k)^-1) + log Wishart(Lambda_k | W, nu). As a function
    of the state it is the log posterior up to the constant log p(X), so states of one chain
    (and of chains on the same data and prior) compare by it. O(K L^2): no pass over the data.

    Parameters
    ----------
    statistics : (counts (K,), sums (K, L), outer_sums (K, L, L)) of the data in each cluster
    log_weights : ndarray of shape (K,)
    means : ndarray of shape (K, L), in the coordinates of the statistics
    precisions, precisions_chol : ndarray of shape (K, L, L)
    alpha : ndarray of shape (K,)
    beta : float
    mean_prior : ndarray of shape (L,), in the coordinates of the statistics
    wishart_scale_inv : ndarray of shape (L, L), W^-1
    dof : float, nu
    constant : float, default=None
        :func:`log_joint_constant` of the same prior (computed when None; a sampler passes it
        once per fit).

    Returns
    -------
    float
    """
    counts, sums, outer_sums = statistics
    n_components, n_features = means.shape
    if constant is None:
        constant = log_joint_constant(alpha, beta, wishart_scale_inv, dof, n_components, n_features)
    log_det = 2.0 * np.log(np.diagonal(precisions_chol, axis1=1, axis2=2)).sum(axis=1)  # (K,) log|Lambda_k|
    # tr(Lambda_k S_k), S_k = sum_{n in k} (x_n - mu_k)(x_n - mu_k)^T, expanded over the statistics;
    # tr(Lambda_k W^-1) for the Wishart term.
    lambda_mu = (precisions @ means[:, :, None])[:, :, 0]  # (K, L)
    traces = (precisions.reshape(n_components, -1) @ np.column_stack(
        [outer_sums.reshape(n_components, -1).T, wishart_scale_inv.reshape(-1, 1)]))  # (K, K + 1)
    offsets = means - mean_prior  # (K, L)
    lambda_offsets = lambda_mu - precisions @ mean_prior  # (K, L): Lambda_k (mu_k - m)
    log_likelihood = (0.5 * (counts @ log_det) - 0.5 * counts.sum() * n_features * _LOG_2PI
                      - 0.5 * (np.diagonal(traces[:, :n_components]).sum() - 2.0 * np.sum(lambda_mu * sums)
                               + counts @ np.sum(lambda_mu * means, axis=1)))
    log_assignments = counts[counts > 0] @ log_weights[counts > 0]
    log_prior = ((alpha - 1.0) @ log_weights + (0.5 + 0.5 * (dof - n_features - 1.0)) * log_det.sum()
                 - 0.5 * beta * np.sum(lambda_offsets * offsets) - 0.5 * traces[:, -1].sum())
    return float(log_likelihood + log_assignments + log_prior + constant)


def log_joint_constant(alpha, beta, wishart_scale_inv, dof, n_components, n_features, blocks=None):
    """The terms of :func:`log_joint` that only the prior sets: the Dirichlet's and, K times,
    the Gauss-Wishart's normalisers. ``blocks``: the sizes of the diagonal blocks of a
    block-diagonal Wishart (:func:`block_slices`), one Wishart per block with nu_b = L_b + nu - L
    degrees of freedom; the terms of :func:`log_joint` that depend on the state are then the
    same as the full Wishart's."""
    from scipy.special import gammaln, multigammaln

    per_cluster = 0.5 * n_features * (np.log(beta) - _LOG_2PI)
    for block in block_slices(n_features, blocks):
        size = block.stop - block.start
        block_dof = dof - n_features + size
        _, log_det_scale_inv = np.linalg.slogdet(wishart_scale_inv[block, block])
        per_cluster += (-0.5 * block_dof * size * np.log(2.0) + 0.5 * block_dof * log_det_scale_inv
                        - multigammaln(0.5 * block_dof, size))
    return float(gammaln(np.sum(alpha)) - np.sum(gammaln(alpha)) + n_components * per_cluster)


def block_slices(n_features, blocks=None):
    """The slices of the diagonal blocks of sizes ``blocks`` (all of the features when None)."""
    if blocks is None:
        return [slice(0, n_features)]
    edges = np.cumsum([0] + [int(size) for size in blocks])
    return [slice(int(start), int(stop)) for start, stop in zip(edges[:-1], edges[1:])]


def block_diagonal(matrices, blocks):
    """``matrices`` (..., L, L) with every entry outside the diagonal blocks of sizes ``blocks`` set to 0."""
    if blocks is None:
        return matrices
    result = np.zeros_like(matrices)
    for block in block_slices(matrices.shape[-1], blocks):
        result[..., block, block] = matrices[..., block, block]
    return result


def sample_block_wishart(scale_inv, dof, blocks, rng, jitter_log=None):
    """Draw block-diagonal Lambda_k, each diagonal block b ~ Wishart(W_k,bb, nu_k - L + L_b)
    independently, where W_k,bb^-1 is the block b of ``scale_inv`` (K, L, L) (the Gauss-Wishart
    posterior of a block is the full one's diagonal block). ``blocks`` None: one full Wishart."""
    n_features = scale_inv.shape[-1]
    if blocks is None:
        return sample_wishart(cholesky(scale_inv, jitter_log), dof, rng)
    precisions = np.zeros_like(scale_inv)
    for block in block_slices(n_features, blocks):
        size = block.stop - block.start
        precisions[:, block, block] = sample_wishart(cholesky(scale_inv[:, block, block], jitter_log),
                                                     dof - n_features + size, rng)
    return precisions


def data_scaled_prior(X, n_components, dof, per_axis=False, blocks=None):
    """(m, W) of the Gauss-Wishart prior scaled to the data (Fraley & Raftery 2007, "Bayesian
    regularization for normal mixture estimation"): m = the data mean and W^-1 = nu Cov(X) /
    K^(2/L), so that E[Lambda_k^-1] = W^-1 / nu is about a K-th of the data's spread (in volume)
    in every direction, whatever the data's scale. scikit-learn's BayesianGaussianMixture and
    SERKET's GMM also centre the prior on the data mean and scale it by the data covariance.
    ``per_axis``: W^-1 = nu Cov(X) / K^2 instead, a K-th of the data's spread along every axis:
    tighter, for data whose clusters are far apart in many directions (a UMAP embedding).
    ``blocks``: the sizes of the diagonal blocks of a block-diagonal Wishart (``GibbsGMM(
    covariance_blocks=...)``): W is block-diagonal, each block the prior its features would get
    alone (nu_b = L_b + nu - L, K^(2/L_b)), so that every block's clusters are a K-th of its own
    spread.

    Raises ValueError, in one sentence, when the data cannot give a prior.
    """
    n_samples, n_features = X.shape
    if blocks is not None:
        scale = np.zeros((n_features, n_features))
        for block in block_slices(n_features, blocks):
            _, scale[block, block] = data_scaled_prior(X[:, block], n_components, dof - n_features + block.stop
                                                       - block.start, per_axis=per_axis)
        return X.mean(axis=0), scale
    if n_samples < 2:
        raise ValueError(f"A prior scaled to the data needs at least 2 data points; got {n_samples} sample.")
    covariance = np.atleast_2d(np.cov(X, rowvar=False))
    spread = np.trace(covariance) / n_features
    if not spread > 0 or np.all(X == X[0]):  # (the second: rounding can leave a tiny spread)
        raise ValueError(f"The {n_samples} data points are all the same (zero variance), so no prior can be "
                         "scaled to them; check the data (or the encoder that produced them), or give "
                         "wishart_scale and mean_prior yourself.")
    covariance = covariance / n_components ** (2.0 if per_axis else 2.0 / n_features)
    covariance += 1e-6 * np.trace(covariance) / n_features * np.eye(n_features)  # keeps a flat direction invertible
    return X.mean(axis=0), np.linalg.inv(dof * covariance)


def sample_wishart(scale_inv_chol, dof, rng):
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


def sample_means(m_hat, beta_hat, precisions_chol, rng):
    """Draw mu_k ~ Normal(m_hat_k, (beta_hat_k Lambda_k)^-1) for every k.

    With Lambda_k = U_k U_k^T, mu_k = m_hat_k + U_k^-T eps / sqrt(beta_hat_k), eps ~ N(0, I).
    """
    eps = rng.standard_normal(m_hat.shape)[..., None]  # (K, L, 1)
    offset = np.linalg.solve(precisions_chol.transpose(0, 2, 1), eps)[..., 0]  # (K, L)
    return m_hat + offset / np.sqrt(beta_hat)[:, None]


def sample_log_dirichlet(concentration, rng):
    """log of a Dirichlet draw, via Gamma variates normalised in the log domain."""
    gammas = rng.standard_gamma(concentration)
    with np.errstate(divide="ignore"):
        log_gammas = np.log(gammas)
    # A Gamma draw with a tiny shape can underflow to 0; floor it far below any real weight.
    log_gammas = np.maximum(log_gammas, -700.0)
    # log-sum-exp by hand: scipy's is ~100x slower on a vector of K numbers.
    largest = log_gammas.max()
    return log_gammas - (largest + np.log(np.sum(np.exp(log_gammas - largest))))


class NumpySweepData:
    """The per-datum half of a sweep in NumPy: the data, and the two O(N K L^2) steps on them.

    Holds the (centred) data as monomials (:func:`quadratic_features`) where that form is
    cheaper, else as they are. The K x L x L parameter algebra stays in :class:`GibbsGMM`.
    ``gmm_torch.TorchSweepData`` has the same two methods.
    """

    def __init__(self, X, n_components):
        self.n_samples, self.n_features = X.shape
        self.n_components = n_components
        if use_quadratic_features(self.n_features, n_components):
            self.X, self.features = None, quadratic_features(X)  # (P, N), once for every sweep
        else:
            self.X, self.features = X, None

    def sample_labels(self, means, precisions_chol, log_weights, rng):
        """Draw z; return labels of shape (N,) and log p(X | parameters) (a float)."""
        if self.features is not None:
            weighted = log_gaussian_coefficients(means, precisions_chol, log_weights) @ self.features  # (K, N)
        else:
            weighted = estimate_log_gaussian_prob(self.X, means, precisions_chol).T + log_weights[:, None]
            weighted = np.ascontiguousarray(weighted)  # (K, N)
        labels, log_norm = sample_categorical_columns(weighted, rng)
        return labels, float(log_norm.sum())

    def sufficient_statistics(self, labels):
        """counts (K,), sums (K, L), outer_sums (K, L, L) of the data in each cluster."""
        if self.features is not None:
            return sufficient_statistics_from_features(self.features, labels, self.n_components, self.n_features)
        return sufficient_statistics(self.X, labels, self.n_components)


def em_labels(X, n_components, restarts, seed, reg_covar=None):
    """Assignments of the most likely of ``restarts`` EM fits (scikit-learn, k-means starts);
    ``reg_covar`` defaults to 1e-6 of the data's mean variance.

    Runs on one thread (:data:`vaegmm.threads.ONE_THREAD`: more cost more than they save at
    this size, and oversubscribe a busy machine). Data with fewer distinct points than
    components need no EM: each distinct point is its own cluster, the rest start empty, and
    one warning says so.
    """
    from sklearn.mixture import GaussianMixture

    from .threads import ONE_THREAD, limit_threads

    if n_components == 1:  # nothing to fit (and scikit-learn's EM needs 2 points)
        return np.zeros(len(X), dtype=np.int64)
    distinct, labels = np.unique(X, axis=0, return_inverse=True)
    if len(distinct) < n_components:
        warnings.warn(f"EM start: the latents hold {len(distinct)} distinct points for {n_components} clusters; "
                      "each distinct point starts its own cluster and the others start empty.",
                      RuntimeWarning, stacklevel=2)
        return labels.reshape(-1).astype(np.int64)
    if reg_covar is None:
        reg_covar = 1e-6 * (float(np.mean(np.var(X, axis=0))) or 1.0)
    mixture = GaussianMixture(n_components, covariance_type="full", n_init=restarts, random_state=seed,
                              reg_covar=reg_covar)
    with limit_threads(ONE_THREAD):
        return mixture.fit(X).predict(X).astype(np.int64)
