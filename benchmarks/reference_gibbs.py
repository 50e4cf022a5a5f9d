"""A straightforward implementation of the reference repository's Gibbs sampler, for timing only.

It follows the reference's algorithm and its costs, written plainly:

- the Mahalanobis term of every datum under cluster k as the diagonal of the N x N matrix
  ``(X - mu_k) Lambda_k (X - mu_k)^T`` (``np.diag(d @ Lambda @ d.T)``), so time O(N^2 L) and
  memory O(N^2) per cluster per sweep;
- responsibilities by ``exp`` of the log densities, normalised per datum (the reference has no
  log-sum-exp; here the row maximum is subtracted first so that the benchmark cannot stop on
  0/0, which only makes this version slightly more expensive);
- one categorical draw per datum in a Python loop (``np.random.multinomial``);
- per cluster, the Gauss-Wishart posterior from the members, ``scipy.stats.wishart.rvs`` for
  Lambda_k and ``multivariate_normal`` for mu_k; ``dirichlet`` for pi.

Not used by the package; :mod:`benchmarks.gibbs` times one sweep of it.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def reference_sweep(X, means, precisions, weights, rng, *, beta=1.0, mean_prior=None, wishart_scale=0.55,
                    wishart_dof=None, alpha=0.3):
    """One sweep of the reference-style sampler.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    means : ndarray of shape (n_components, n_features)
    precisions : ndarray of shape (n_components, n_features, n_features)
    weights : ndarray of shape (n_components,)
    rng : numpy.random.Generator

    Returns
    -------
    labels, means, precisions, weights : the new state.
    """
    n_samples, n_features = X.shape
    n_components = means.shape[0]
    mean_prior = np.zeros(n_features) if mean_prior is None else mean_prior
    dof = float(n_features if wishart_dof is None else wishart_dof)
    W_inv = np.linalg.inv(wishart_scale * np.eye(n_features))

    # z | x, mu, Lambda, pi: an N x N matrix per cluster, of which only the diagonal is used.
    log_resp = np.zeros((n_samples, n_components))
    for k in range(n_components):
        d = X - means[k]
        mahalanobis = np.diag(d @ precisions[k] @ d.T)  # (N, N) -> (N,)
        _, log_det = np.linalg.slogdet(precisions[k])
        log_resp[:, k] = np.log(weights[k]) + 0.5 * log_det - 0.5 * n_features * np.log(2 * np.pi) - 0.5 * mahalanobis
    resp = np.exp(log_resp - log_resp.max(axis=1, keepdims=True))
    resp /= resp.sum(axis=1, keepdims=True)
    labels = np.zeros(n_samples, dtype=int)
    for n in range(n_samples):  # one draw per datum, in Python
        labels[n] = np.argmax(rng.multinomial(1, resp[n]))

    # pi | z, then (mu_k, Lambda_k) | x, z cluster by cluster.
    counts = np.array([np.sum(labels == k) for k in range(n_components)])
    weights = rng.dirichlet(alpha + counts)
    new_means = np.empty_like(means)
    new_precisions = np.empty_like(precisions)
    for k in range(n_components):
        members = X[labels == k]
        beta_hat = counts[k] + beta
        m_hat = (members.sum(axis=0) + beta * mean_prior) / beta_hat
        scale_inv = (members.T @ members + beta * np.outer(mean_prior, mean_prior)
                     - beta_hat * np.outer(m_hat, m_hat) + W_inv)
        scale = np.linalg.inv(scale_inv)
        scale = 0.5 * (scale + scale.T)
        new_precisions[k] = stats.wishart.rvs(df=counts[k] + dof, scale=scale, random_state=rng)
        new_means[k] = rng.multivariate_normal(m_hat, np.linalg.inv(beta_hat * new_precisions[k]))
    return labels, new_means, new_precisions, weights
