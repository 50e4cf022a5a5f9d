"""Sequentially-allocated split-merge moves for the collapsed finite Bayesian Gaussian mixture.

The model has K labelled slots: pi ~ Dirichlet(alpha, ..., alpha), Lambda_k ~ Wishart(W, nu),
mu_k | Lambda_k ~ N(m, (beta Lambda_k)^-1), z_n ~ Cat(pi), x_n ~ N(mu_{z_n}, Lambda_{z_n}^-1).
With pi, mu and Lambda integrated out, the posterior over labelled assignments is

    p(z | X)  propto  prod_k [Gamma(n_k + alpha) / Gamma(alpha)] ML(X_k),

ML(X_k) the Gauss-Wishart marginal likelihood of the data in slot k (1 for an empty slot).

:func:`split_merge` runs the sequentially-allocated merge-split (SAMS) Metropolis-Hastings move
of Dahl (2005), "Sequentially-allocated merge-split sampler for conjugate and nonconjugate
Dirichlet process mixture models" (after Jain & Neal 2004), adapted to labelled slots: a split
puts the new cluster into an empty slot, a merge empties one. A Gibbs sweep moves one datum at
a time and cannot move a whole cluster through a valley of low posterior; these moves can, and
they leave p(z | X) invariant, so they may be interleaved with any other p(z | X)-invariant
kernel.

Cost: one move is O(N) to find the two clusters' members plus O(n L^2) for the sequential
allocation of their n members (running Gauss-Wishart posteriors updated by rank-one formulas,
with a Cholesky refresh every ``_REFRESH`` additions), and O(n L^2 + L^3) for the exact marginal
likelihoods; nothing is O(N^2).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import multigammaln

from .gibbs import block_slices, posterior_gauss_wishart, sufficient_statistics

__all__ = ["log_collapsed_posterior", "log_marginal_likelihood", "split_merge"]

_LOG_PI = math.log(math.pi)
# The running inverse scale W_n of a side of the sequential allocation is updated by
# Sherman-Morrison; every _REFRESH additions it (and log |W_n^-1|) is recomputed from W_n^-1 by
# Cholesky, so rounding cannot accumulate over thousands of additions.
_REFRESH = 32


def _log_det(matrices):
    """log |A| of a stack of SPD matrices, by Cholesky."""
    chol = np.linalg.cholesky(matrices)
    return 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def log_marginal_likelihood(counts, sums, outer_sums, beta, mean_prior, scale_inv, dof):
    """log ML of each slot's data, shape (K,) (0 for empty slots), from sufficient statistics.

    ``log ML = -(n L / 2) log(pi) + log Gamma_L(nu_n / 2) - log Gamma_L(nu / 2)
    + (nu / 2) log|W^-1| - (nu_n / 2) log|W_n^-1| + (L / 2)(log beta - log beta_n)``
    with the posterior (beta_n, m_n, W_n^-1, nu_n) of :func:`vaegmm.gibbs.posterior_gauss_wishart`
    (Bishop, PRML 10.2); log-determinants by Cholesky.

    Parameters
    ----------
    counts : array of shape (K,)
    sums : array of shape (K, L)
    outer_sums : array of shape (K, L, L), sum over the slot of x x^T
    beta, dof : float, beta > 0 and nu > L - 1
    mean_prior : array of shape (L,)
    scale_inv : array of shape (L, L), W^-1 (symmetric positive definite)

    Returns
    -------
    log_ml : ndarray of shape (K,)
    """
    counts = np.asarray(counts, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    outer_sums = np.asarray(outer_sums, dtype=np.float64)
    mean_prior = np.asarray(mean_prior, dtype=np.float64)
    scale_inv = np.asarray(scale_inv, dtype=np.float64)
    n_features = sums.shape[1]
    beta_n, _, scale_inv_n, dof_n = posterior_gauss_wishart(
        counts, sums, outer_sums, beta, mean_prior, scale_inv, dof
    )
    log_ml = (
        -0.5 * counts * n_features * _LOG_PI
        + multigammaln(0.5 * dof_n, n_features)
        - multigammaln(0.5 * dof, n_features)
        + 0.5 * dof * _log_det(scale_inv)
        - 0.5 * dof_n * _log_det(scale_inv_n)
        + 0.5 * n_features * (np.log(beta) - np.log(beta_n))
    )
    # An empty slot's posterior is its prior up to round-off; its marginal likelihood is 1.
    return np.where(counts > 0, log_ml, 0.0)


class _Prior:
    """Validated hyperparameters, with the prior's inverse scale and log-determinant."""

    def __init__(self, n_features, alpha, beta, mean_prior, scale_inv, dof):
        self.n_features = n_features
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.dof = float(dof)
        self.mean = np.array(mean_prior, dtype=np.float64).reshape(-1)
        self.scale_inv = np.array(scale_inv, dtype=np.float64)
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a positive number, got {alpha!r}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a positive number, got {beta!r}")
        if not (self.dof > n_features - 1 and math.isfinite(self.dof)):
            raise ValueError(f"dof must exceed n_features - 1 = {n_features - 1}, got {dof!r}")
        if self.mean.shape != (n_features,) or not np.all(np.isfinite(self.mean)):
            raise ValueError(f"mean_prior must be {n_features} finite numbers")
        if self.scale_inv.shape != (n_features, n_features):
            raise ValueError(f"scale_inv must have shape ({n_features}, {n_features})")
        self.scale_inv = 0.5 * (self.scale_inv + self.scale_inv.T)
        try:
            chol = np.linalg.cholesky(self.scale_inv)
        except np.linalg.LinAlgError:
            raise ValueError("scale_inv must be symmetric positive definite") from None
        self.log_det_scale_inv = 2.0 * float(np.sum(np.log(np.diag(chol))))
        identity = np.eye(n_features)
        self.scale = np.linalg.solve(chol.T, np.linalg.solve(chol, identity))
        self.scale = 0.5 * (self.scale + self.scale.T)

    def log_ml(self, X, index_sets):
        """log ML of X[idx] for each index array in ``index_sets``, shape (len(index_sets),)."""
        n_features = self.n_features
        counts = np.empty(len(index_sets))
        sums = np.empty((len(index_sets), n_features))
        outer_sums = np.empty((len(index_sets), n_features, n_features))
        for row, idx in enumerate(index_sets):
            members = X[idx]
            counts[row] = len(idx)
            sums[row] = members.sum(axis=0)
            outer_sums[row] = members.T @ members
        return log_marginal_likelihood(
            counts, sums, outer_sums, self.beta, self.mean, self.scale_inv, self.dof
        )

    def log_prior_weight(self, count):
        """log Gamma(n + alpha) - log Gamma(alpha): a slot's factor in the Dirichlet marginal."""
        return math.lgamma(count + self.alpha) - math.lgamma(self.alpha)


def log_collapsed_posterior(X, labels, n_components, *, alpha, beta, mean_prior, scale_inv, dof, blocks=None):
    """log p(z | X) up to a constant (the formula above).

    ``sum_k [log Gamma(n_k + alpha) - log Gamma(alpha) + log ML(X_k)]`` over the K slots; the
    constant dropped is log Gamma(K alpha) - log Gamma(N + K alpha) - log p(X).

    ``blocks``: the sizes of the diagonal blocks of a block-diagonal Lambda_k
    (``GibbsGMM(covariance_blocks=...)``): each block of features is then its own Gauss-Wishart
    model given z (W^-1's diagonal block, nu_b = L_b + nu - L degrees of freedom, the mean prior's
    block), and log ML(X_k) is the sum of the blocks'.
    """
    X, labels = _check_input(X, labels, n_components)
    n_features = X.shape[1]
    prior = _Prior(n_features, alpha, beta, mean_prior, scale_inv, dof)
    counts, sums, outer_sums = sufficient_statistics(X, labels, n_components)
    log_weights = sum(prior.log_prior_weight(count) for count in counts)
    log_ml = sum(np.sum(log_marginal_likelihood(counts, sums[:, block], outer_sums[:, block, block], prior.beta,
                                                prior.mean[block], prior.scale_inv[block, block],
                                                prior.dof - n_features + block.stop - block.start))
                 for block in block_slices(n_features, blocks))
    return float(log_weights + log_ml)


def _check_input(X, labels, n_components):
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or not np.all(np.isfinite(X)):
        raise ValueError("X must be a finite 2-D array (n_samples, n_features)")
    n_components = int(n_components)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    labels = np.asarray(labels)
    if labels.shape != (X.shape[0],):
        raise ValueError(f"labels must have shape ({X.shape[0]},), got {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))):
            raise ValueError("labels must be integers")
    labels = labels.astype(np.int64)  # always a copy
    if labels.size and (labels.min() < 0 or labels.max() >= n_components):
        raise ValueError(f"labels must lie in 0..{n_components - 1}")
    return X, labels


class _Side:
    """The running Gauss-Wishart posterior of one side of a sequential allocation.

    Holds beta_n, nu_n, m_n, W_n^-1, its inverse W_n and log|W_n^-1|. Adding x, with
    d = x - m_n and c = beta_n / (beta_n + 1):
    ``W_{n+1}^-1 = W_n^-1 + c d d^T``, ``m_{n+1} = m_n + d / (beta_n + 1)``,
    ``log|W_{n+1}^-1| = log|W_n^-1| + log(1 + c d^T W_n d)`` (matrix determinant lemma) and
    ``W_{n+1} = W_n - c W_n d d^T W_n / (1 + c d^T W_n d)`` (Sherman-Morrison).
    """

    __slots__ = ("count", "beta", "dof", "mean", "scale_inv", "scale", "log_det", "since_refresh")

    def __init__(self, prior):
        self.count = 0
        self.beta = prior.beta
        self.dof = prior.dof
        self.mean = prior.mean.copy()
        self.scale_inv = prior.scale_inv.copy()
        self.scale = prior.scale.copy()
        self.log_det = prior.log_det_scale_inv
        self.since_refresh = 0

    def log_predictive(self, x, n_features):
        """log p(x | the data of this side): the Gauss-Wishart posterior predictive.

        That is the Student-t with nu_n - L + 1 degrees of freedom, location m_n and shape
        ((beta_n + 1) / (beta_n (nu_n - L + 1))) W_n^-1, i.e. ML(S + x) / ML(S):
        ``lgamma((nu_n + 1) / 2) - lgamma((nu_n + 1 - L) / 2) - (L / 2) log pi
        + (L / 2) log(beta_n / (beta_n + 1)) - (1/2) log|W_n^-1|
        - ((nu_n + 1) / 2) log(1 + c d^T W_n d)``.

        Returns (log predictive, d, W_n d, d^T W_n d) for :meth:`add`.
        """
        diff = x - self.mean
        projected = self.scale @ diff
        quad = float(diff @ projected)
        shrink = self.beta / (self.beta + 1.0)
        log_pred = (
            math.lgamma(0.5 * (self.dof + 1.0))
            - math.lgamma(0.5 * (self.dof + 1.0 - n_features))
            - 0.5 * n_features * _LOG_PI
            + 0.5 * n_features * math.log(shrink)
            - 0.5 * self.log_det
            - 0.5 * (self.dof + 1.0) * math.log1p(shrink * quad)
        )
        return log_pred, diff, projected, quad

    def add(self, diff, projected, quad):
        """Add the datum whose (d, W_n d, d^T W_n d) :meth:`log_predictive` returned."""
        shrink = self.beta / (self.beta + 1.0)
        self.scale_inv += shrink * np.outer(diff, diff)
        self.mean += diff / (self.beta + 1.0)
        self.beta += 1.0
        self.dof += 1.0
        self.count += 1
        self.since_refresh += 1
        if self.since_refresh >= _REFRESH:
            self.since_refresh = 0
            self.scale_inv = 0.5 * (self.scale_inv + self.scale_inv.T)
            chol = np.linalg.cholesky(self.scale_inv)
            self.log_det = 2.0 * float(np.sum(np.log(np.diag(chol))))
            inv_chol = np.linalg.inv(chol)
            self.scale = inv_chol.T @ inv_chol
        else:
            self.log_det += math.log1p(shrink * quad)
            self.scale -= (shrink / (1.0 + shrink * quad)) * np.outer(projected, projected)


def _sequential_allocation(X, first, second, order, prior, rng=None, forced=None):
    """Allocate ``order`` in turn to the side of ``first`` (0) or of ``second`` (1).

    The sides start as {x_first} and {x_second}; datum x goes to side s with probability
    proportional to (n_s + alpha) ML(S_s + x) / ML(S_s), n_s and S_s the size and data of the
    side so far. With ``forced`` (a bool array over ``order``, True for side 1) the allocation
    is not drawn but given, and the log probability of that allocation is returned; else it is
    drawn with ``rng`` (one uniform per datum). Both branches run the same arithmetic.

    Returns
    -------
    to_second : ndarray of bool, shape (len(order),)
    log_q : float, log probability of ``to_second`` under the sequential allocation.
    """
    n_features = prior.n_features
    alpha = prior.alpha
    sides = (_Side(prior), _Side(prior))
    for side, index in zip(sides, (first, second)):
        _, diff, projected, quad = side.log_predictive(X[index], n_features)
        side.add(diff, projected, quad)
    if forced is None:
        uniforms = rng.random(len(order))
        to_second = np.empty(len(order), dtype=bool)
    else:
        to_second = np.asarray(forced, dtype=bool)
        if to_second.shape != (len(order),):
            raise ValueError("forced must have one entry per datum of order")
    log_q = 0.0
    for step, index in enumerate(order):
        x = X[index]
        pred0, diff0, proj0, quad0 = sides[0].log_predictive(x, n_features)
        pred1, diff1, proj1, quad1 = sides[1].log_predictive(x, n_features)
        weight0 = math.log(sides[0].count + alpha) + pred0
        weight1 = math.log(sides[1].count + alpha) + pred1
        # log P(side 1) = -log(1 + exp(w0 - w1)), and log P(side 0) likewise, stably.
        gap = weight0 - weight1
        if gap > 0:
            log_p1 = -gap - math.log1p(math.exp(-gap))
            log_p0 = -math.log1p(math.exp(-gap))
        else:
            log_p1 = -math.log1p(math.exp(gap))
            log_p0 = gap - math.log1p(math.exp(gap))
        if forced is None:
            choice = uniforms[step] < math.exp(log_p1)
            to_second[step] = choice
        else:
            choice = bool(to_second[step])
        if choice:
            log_q += log_p1
            sides[1].add(diff1, proj1, quad1)
        else:
            log_q += log_p0
            sides[0].add(diff0, proj0, quad0)
    return to_second, log_q



def _split_terms(X, side_i, side_j, prior):
    """log p(z'|X) - log p(z|X) for the split of side_i + side_j into side_i and side_j."""
    merged = np.concatenate((side_i, side_j))
    log_ml = prior.log_ml(X, [side_i, side_j, merged])
    return (
        prior.log_prior_weight(len(side_i))
        + prior.log_prior_weight(len(side_j))
        - prior.log_prior_weight(len(merged))
        + float(log_ml[0] + log_ml[1] - log_ml[2])
    )


def _propose(X, labels, n_components, i, j, order, empty_slot, prior, rng=None, forced=None):
    """The SAMS proposal and its log Metropolis-Hastings ratio, for fixed random choices.

    ``order`` holds the members of the clusters of i and j other than i and j, in the order of
    the sequential allocation. If labels[i] == labels[j] == c, the move is a split of c into c
    (with i) and ``empty_slot`` (with j; it must be empty); the allocation is drawn with ``rng``
    or given by ``forced`` (bool over ``order``, True for ``empty_slot``). Otherwise it is the
    merge of slot labels[j] into slot labels[i]; ``empty_slot``, ``rng`` and ``forced`` are
    unused. See :func:`split_merge` for the ratio.

    Returns
    -------
    proposal : ndarray of int64, the proposed labels (a new array)
    log_q : float, log probability of the split's allocation (0.0 for a merge)
    log_ratio : float, log of the Metropolis-Hastings ratio; accept with prob min(1, exp(.))
    """
    order = np.asarray(order, dtype=np.int64)
    slot_i, slot_j = int(labels[i]), int(labels[j])
    counts = np.bincount(labels, minlength=n_components)
    n_empty = int(np.sum(counts == 0))
    proposal = labels.copy()
    if slot_i == slot_j:
        if empty_slot is None or counts[empty_slot] != 0:
            raise ValueError("a split needs an empty slot")
        to_second, log_q = _sequential_allocation(X, i, j, order, prior, rng=rng, forced=forced)
        side_i = np.concatenate(([i], order[~to_second])).astype(np.int64)
        side_j = np.concatenate(([j], order[to_second])).astype(np.int64)
        proposal[side_j] = empty_slot
        log_post_ratio = _split_terms(X, side_i, side_j, prior)
        return proposal, log_q, log_post_ratio + math.log(n_empty) - log_q
    # Merge slot_j into slot_i. The reverse split of the merged cluster, with the same i, j and
    # order, must send j's side to slot_j, one of the n_empty + 1 empty slots after the merge,
    # and reproduce the current allocation.
    forced_back = labels[order] == slot_j
    _, log_q_back = _sequential_allocation(X, i, j, order, prior, forced=forced_back)
    side_i = np.concatenate(([i], order[~forced_back])).astype(np.int64)
    side_j = np.concatenate(([j], order[forced_back])).astype(np.int64)
    proposal[side_j] = slot_i
    log_post_ratio = -_split_terms(X, side_i, side_j, prior)
    return proposal, 0.0, log_post_ratio + log_q_back - math.log(n_empty + 1)


def split_merge(X, labels, n_components, *, alpha, beta, mean_prior, scale_inv, dof, rng,
                n_moves=1):
    """n_moves sequentially-allocated split-merge Metropolis-Hastings moves on ``labels``,
    each leaving p(z | X) invariant. Returns (new_labels (int64 copy), n_accepted).

    One move (Dahl 2005, for K labelled slots):

    1. Draw an ordered pair (i, j) of distinct data uniformly, prob 1 / (N (N - 1)), and a
       uniform random order sigma of S = (members of the slots of i and j) minus {i, j}. S is
       the same set before and after either move below, so these draws have the same
       probability forwards and backwards.
    2. If z_i == z_j == c: SPLIT, if some slot is empty (else the move does nothing). Draw the
       new slot e uniformly among the m(z) empty slots, put i in c and j in e, and allocate S
       in the order sigma, each x to side s in {c, e} with probability proportional to
       (n_s + alpha) ML(S_s + x) / ML(S_s) (sizes and data of the sides so far); q_sigma(z')
       is the product of these probabilities.
    3. If z_i != z_j: MERGE slot z_j into slot z_i (slot z_j becomes empty).

    Proposal probabilities (the common factor 1 / (N (N - 1) |S|!) cancels):

    * split z -> z':  q(z' | z) = q_sigma(z') / m(z). Its only reverse is the merge of
      z'_j = e into z'_i = c, with the same (i, j, sigma), which is deterministic: q(z | z') = 1.
    * merge z -> z':  q(z' | z) = 1. Its reverse is the split of z'_i with the same (i, j,
      sigma) that picks e = z_j among the m(z') = m(z) + 1 empty slots of z' and reproduces the
      current allocation: q(z | z') = q_sigma(z) / (m(z) + 1), q_sigma(z) computed by running
      the sequential allocation forced to the current allocation.

    Hence the acceptance probabilities

        a_split = min(1, [p(z'|X) / p(z|X)] * m(z) / q_sigma(z')),
        a_merge = min(1, [p(z'|X) / p(z|X)] * q_sigma(z) / (m(z) + 1)),

    with, for a split of c (n_c data) into c' and e' (n_c' + n_e' = n_c),

        p(z'|X) / p(z|X) = Gamma(n_c' + alpha) Gamma(n_e' + alpha) / (Gamma(n_c + alpha)
                           Gamma(alpha)) * ML(X_c') ML(X_e') / ML(X_c),

    and the inverse for a merge. Every (i, j, sigma) pairs each split with exactly one merge and
    back, and a_merge(z -> z') = 1 / a_split(z' -> z) before the min: detailed balance holds
    for each (i, j, sigma), so the move leaves p(z | X) invariant. (Always taking the
    lowest-numbered empty slot instead would make a merge that empties any other slot
    irreversible, to be rejected; the uniform choice keeps every merge possible.)

    Parameters
    ----------
    X : array of shape (N, L)
    labels : array of int, shape (N,), values in 0..n_components - 1
    n_components : int, K (empty slots allowed)
    alpha, beta, mean_prior, scale_inv, dof : the prior (Dirichlet alpha; Gauss-Wishart
        beta, m, W^-1, nu)
    rng : numpy.random.Generator
    n_moves : int, default=1

    Returns
    -------
    new_labels : ndarray of int64, shape (N,), a copy
    n_accepted : int, moves whose proposal was accepted
    """
    X, labels = _check_input(X, labels, n_components)
    n_components = int(n_components)
    n_samples = X.shape[0]
    prior = _Prior(X.shape[1], alpha, beta, mean_prior, scale_inv, dof)
    n_moves = int(n_moves)
    if n_moves < 0:
        raise ValueError(f"n_moves must be >= 0, got {n_moves}")
    n_accepted = 0
    if n_samples < 2:
        return labels, n_accepted
    counts = np.bincount(labels, minlength=n_components)
    for _ in range(n_moves):
        i = int(rng.integers(n_samples))
        j = int(rng.integers(n_samples - 1))
        j += j >= i
        slot_i, slot_j = labels[i], labels[j]
        if slot_i == slot_j:
            empties = np.flatnonzero(counts == 0)
            if len(empties) == 0:
                continue  # no slot to split into: the move stays put
            empty_slot = int(empties[rng.integers(len(empties))])
            members = np.flatnonzero(labels == slot_i)
        else:
            empty_slot = None
            members = np.flatnonzero((labels == slot_i) | (labels == slot_j))
        others = members[(members != i) & (members != j)]
        order = rng.permutation(others)
        proposal, _, log_ratio = _propose(
            X, labels, n_components, i, j, order, empty_slot, prior, rng=rng
        )
        if log_ratio >= 0 or rng.random() < math.exp(log_ratio):
            labels = proposal
            counts = np.bincount(labels, minlength=n_components)
            n_accepted += 1
    return labels, n_accepted
