"""Tests of the sequentially-allocated split-merge moves (vaegmm.split_merge)."""

import itertools
import math

import numpy as np
import pytest
from scipy.stats import multivariate_t
from sklearn.metrics import adjusted_rand_score

from vaegmm.gibbs import posterior_gauss_wishart, sufficient_statistics
from vaegmm.split_merge import (
    _Prior,
    _propose,
    _sequential_allocation,
    log_collapsed_posterior,
    log_marginal_likelihood,
    split_merge,
)


def _prior_kwargs(n_features, alpha=0.7, beta=0.5, dof=None, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    factor = rng.standard_normal((n_features, n_features))
    return dict(
        alpha=alpha,
        beta=beta,
        mean_prior=shift + 0.3 * rng.standard_normal(n_features),
        scale_inv=factor @ factor.T + n_features * np.eye(n_features),
        dof=n_features + 1.5 if dof is None else dof,
    )


def _chain_rule_log_ml(X, beta, mean_prior, scale_inv, dof):
    """log p(x_1..x_n) = sum_i log t(x_i | x_<i), the Gauss-Wishart predictive being the
    Student-t with nu_n - L + 1 degrees of freedom, location m_n and shape
    (beta_n + 1) / (beta_n (nu_n - L + 1)) W_n^-1 (posterior of x_<i)."""
    n_features = X.shape[1]
    total = 0.0
    for n in range(len(X)):
        prefix = X[:n]
        counts = np.array([float(n)])
        sums = prefix.sum(axis=0)[None]
        outer = (prefix.T @ prefix)[None]
        beta_n, m_n, scale_inv_n, dof_n = posterior_gauss_wishart(
            counts, sums, outer, beta, mean_prior, scale_inv, dof
        )
        df = dof_n[0] - n_features + 1
        shape = (beta_n[0] + 1) / (beta_n[0] * df) * scale_inv_n[0]
        total += multivariate_t(loc=m_n[0], shape=shape, df=df).logpdf(X[n])
    return total


@pytest.mark.parametrize("n_features", [2, 3])
def test_log_marginal_likelihood_matches_chain_rule_of_student_t(n_features):
    rng = np.random.default_rng(n_features)
    kw = _prior_kwargs(n_features, seed=n_features)
    del kw["alpha"]
    n_points = [0, 1, 4, 9]
    data = [rng.standard_normal((n, n_features)) * 1.5 + 0.7 for n in n_points]
    X = np.concatenate(data)
    labels = np.repeat(np.arange(len(n_points)), n_points)
    counts, sums, outer = sufficient_statistics(X, labels, len(n_points))
    log_ml = log_marginal_likelihood(counts, sums, outer, **kw)
    assert log_ml.shape == (len(n_points),)
    assert log_ml[0] == 0.0  # an empty slot
    for k in range(1, len(n_points)):
        expected = _chain_rule_log_ml(data[k], **kw)
        assert log_ml[k] == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_block_diagonal_collapsed_posterior_is_the_blocks_student_t_chains_and_the_dirichlet():
    """With covariance blocks, log p(z | X) = sum_k [log Gamma(n_k + alpha) - log Gamma(alpha)] plus,
    per cluster and block, the chain rule of Student-t predictives (scipy) of that block's features
    under its own Gauss-Wishart prior (W^-1's diagonal block, nu_b = L_b + nu - L)."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((9, 3))
    labels = np.array([0, 1, 0, 2, 1, 0, 2, 2, 0])
    kwargs = _prior_kwargs(3, dof=4.5)
    expected = sum(math.lgamma(n + kwargs["alpha"]) - math.lgamma(kwargs["alpha"])
                   for n in np.bincount(labels, minlength=4))
    for block in (slice(0, 1), slice(1, 3)):
        size = block.stop - block.start
        for k in range(3):
            expected += _chain_rule_log_ml(X[labels == k][:, block], kwargs["beta"], kwargs["mean_prior"][block],
                                           kwargs["scale_inv"][block, block], kwargs["dof"] - 3 + size)
    got = log_collapsed_posterior(X, labels, 4, blocks=(1, 2), **kwargs)
    assert got == pytest.approx(expected, rel=1e-10)
    assert log_collapsed_posterior(X, labels, 4, blocks=(3,), **kwargs) == pytest.approx(
        log_collapsed_posterior(X, labels, 4, **kwargs), rel=1e-12)


def test_sequential_allocation_probabilities_match_marginal_likelihood_ratios():
    """The running rank-one posteriors (with Cholesky refreshes) give the same allocation
    probabilities as exact marginal likelihoods, (n_s + alpha) ML(S_s + x) / ML(S_s), over more
    additions than one refresh period, on data far from the origin."""
    rng = np.random.default_rng(3)
    n_features, n_points = 5, 90
    X = rng.standard_normal((n_points, n_features)) * 2.0 + 20.0
    X[n_points // 2 :] += 3.0
    kw = _prior_kwargs(n_features, shift=20.0, seed=3)
    prior = _Prior(n_features, **kw)
    order = np.arange(2, n_points)
    forced = rng.random(len(order)) < 0.4
    _, log_q = _sequential_allocation(X, 0, 1, order, prior, forced=forced)
    sides = [[0], [1]]
    expected = 0.0
    for index, second in zip(order, forced):
        log_ml = prior.log_ml(X, [sides[0], sides[1], sides[0] + [index], sides[1] + [index]])
        weights = [
            math.log(len(sides[s]) + kw["alpha"]) + log_ml[2 + s] - log_ml[s] for s in (0, 1)
        ]
        expected += weights[int(second)] - np.logaddexp(*weights)
        sides[int(second)].append(index)
    assert log_q == pytest.approx(expected, rel=1e-9)


def _all_labellings(n_samples, n_components):
    return np.array(list(itertools.product(range(n_components), repeat=n_samples)), dtype=np.int64)


def _exact_transition_matrix(X, n_components, kw, states, tamper=None):
    """The split-merge kernel's transition matrix, enumerating its random choices: the ordered
    pair (i, j), the order of the other members, the empty slot of a split, the allocation."""
    n_samples = X.shape[0]
    prior = _Prior(X.shape[1], **kw)
    index = {tuple(state): row for row, state in enumerate(states)}
    P = np.zeros((len(states), len(states)))
    pairs = [(i, j) for i in range(n_samples) for j in range(n_samples) if i != j]
    for row, labels in enumerate(states):
        counts = np.bincount(labels, minlength=n_components)
        empties = np.flatnonzero(counts == 0)
        for i, j in pairs:
            weight = 1.0 / len(pairs)
            split = labels[i] == labels[j]
            if split and len(empties) == 0:
                P[row, row] += weight
                continue
            members = np.flatnonzero((labels == labels[i]) | (labels == labels[j]))
            others = [m for m in members if m != i and m != j]
            orders = list(itertools.permutations(others))
            for order in orders:
                slots = empties if split else [None]
                for empty_slot in slots:
                    allocations = (
                        itertools.product([False, True], repeat=len(order)) if split else [None]
                    )
                    w = weight / len(orders) / len(slots)
                    total_q = 0.0
                    for forced in allocations:
                        proposal, log_q, log_ratio = _propose(
                            X, labels, n_components, i, j, order, empty_slot, prior,
                            forced=None if forced is None else np.array(forced, dtype=bool),
                        )
                        if tamper is not None:
                            log_ratio = tamper(split, len(empties), log_ratio)
                        q = math.exp(log_q)
                        total_q += q
                        accept = min(1.0, math.exp(log_ratio))
                        P[row, index[tuple(proposal)]] += w * q * accept
                        P[row, row] += w * q * (1.0 - accept)
                    assert total_q == pytest.approx(1.0, abs=1e-12)
    return P


def test_kernel_leaves_collapsed_posterior_exactly_invariant():
    n_samples, n_components, n_features = 5, 3, 2
    rng = np.random.default_rng(11)
    X = rng.standard_normal((n_samples, n_features))
    X[:2] += 2.5  # some structure, so the posterior is far from uniform
    kw = _prior_kwargs(n_features, alpha=0.6, beta=0.3, seed=11)
    states = _all_labellings(n_samples, n_components)
    log_post = np.array([log_collapsed_posterior(X, z, n_components, **kw) for z in states])
    posterior = np.exp(log_post - log_post.max())
    posterior /= posterior.sum()
    assert posterior.max() / posterior.min() > 10.0

    P = _exact_transition_matrix(X, n_components, kw, states)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(posterior @ P, posterior, rtol=0, atol=1e-10)
    flow = posterior[:, None] * P  # detailed balance, stronger than invariance
    np.testing.assert_allclose(flow, flow.T, rtol=0, atol=1e-12)
    # Irreducible and aperiodic: the posterior is the kernel's only stationary distribution.
    reach = np.linalg.matrix_power((P > 0).astype(float) + np.eye(len(states)), 16)
    assert np.all(reach > 0)
    assert np.all(P.diagonal() > 0)

    # The test has power: dropping the empty-slot factor m(z) of the split, or the factor
    # 1 / (m(z) + 1) of the merge, breaks invariance.
    def drop_empty_slot_factor(split, n_empty, log_ratio):
        return log_ratio - (math.log(n_empty) if split else -math.log(n_empty + 1))

    P_wrong = _exact_transition_matrix(X, n_components, kw, states, drop_empty_slot_factor)
    assert np.max(np.abs(posterior @ P_wrong - posterior)) > 1e-4


def test_simulated_chain_matches_exact_posterior():
    """The driver itself (its random choices, not only the ratio): a long run of split_merge
    on a tiny problem visits states with the exact posterior frequencies. (With the empty slot
    always the lowest-numbered one, or a 50/50 allocation, the slot-occupancy and co-clustering
    frequencies are off by 0.3 and 0.06; here they are within 0.02.)"""
    n_samples, n_components, n_features = 4, 3, 1
    rng = np.random.default_rng(5)
    X = rng.standard_normal((n_samples, n_features))
    X[:2] += 2.0
    kw = _prior_kwargs(n_features, alpha=0.8, beta=0.5, seed=5)
    states = _all_labellings(n_samples, n_components)
    log_post = np.array([log_collapsed_posterior(X, z, n_components, **kw) for z in states])
    posterior = np.exp(log_post - log_post.max())
    posterior /= posterior.sum()
    index = {tuple(state): row for row, state in enumerate(states)}
    labels = np.zeros(n_samples, dtype=np.int64)
    visits = np.zeros(len(states))
    sampler_rng = np.random.default_rng(2024)
    for _ in range(10000):
        labels, _ = split_merge(X, labels, n_components, rng=sampler_rng, **kw)
        visits[index[tuple(labels)]] += 1
    frequencies = visits / visits.sum()
    assert 0.5 * np.abs(frequencies - posterior).sum() < 0.07
    occupied = (states[:, :, None] == np.arange(n_components)).any(axis=1)  # (243, K)
    pairs = itertools.combinations(range(n_samples), 2)
    together = np.stack([states[:, a] == states[:, b] for a, b in pairs], axis=1)
    features = np.concatenate([occupied, together], axis=1).astype(float)
    np.testing.assert_allclose(frequencies @ features, posterior @ features, atol=0.035)


def _blobs(seed):
    """Three separated blobs in 2-D; blobs 0 and 1 share slot 0, blob 2 is split at random
    over slots 1 and 2."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    truth = np.repeat(np.arange(3), 100)
    X = centres[truth] + rng.standard_normal((300, 2))
    labels = np.where(truth == 2, 1 + (rng.random(300) < 0.5), 0)
    kw = dict(alpha=1.0, beta=0.1, mean_prior=X.mean(axis=0), scale_inv=np.eye(2) * 4.0, dof=4.0)
    return X, truth, labels, kw


def _collapsed_gibbs_sweep(X, labels, n_components, kw, rng):
    """One collapsed single-site Gibbs sweep: z_n from (n_k^-n + alpha) ML(X_k^-n + x_n) /
    ML(X_k^-n), for each n in turn."""
    labels = labels.copy()
    counts, sums, outer = sufficient_statistics(X, labels, n_components)
    prior = {key: kw[key] for key in ("beta", "mean_prior", "scale_inv", "dof")}
    for n, x in enumerate(X):
        xx = np.outer(x, x)
        counts[labels[n]] -= 1
        sums[labels[n]] -= x
        outer[labels[n]] -= xx
        log_ml = log_marginal_likelihood(
            np.concatenate([counts, counts + 1]),
            np.concatenate([sums, sums + x]),
            np.concatenate([outer, outer + xx]),
            **prior,
        )
        weights = np.log(counts + kw["alpha"]) + log_ml[n_components:] - log_ml[:n_components]
        probs = np.exp(weights - weights.max())
        labels[n] = rng.choice(n_components, p=probs / probs.sum())
        counts[labels[n]] += 1
        sums[labels[n]] += x
        outer[labels[n]] += xx
    return labels


def test_reaches_true_partition_on_separated_blobs():
    X, truth, labels, kw = _blobs(7)
    assert adjusted_rand_score(truth, labels) < 0.6
    log_start = log_collapsed_posterior(X, labels, 3, **kw)
    new_labels, n_accepted = split_merge(
        X, labels, 3, rng=np.random.default_rng(0), n_moves=300, **kw
    )
    assert adjusted_rand_score(truth, new_labels) == 1.0
    assert n_accepted >= 2  # a merge, then a split
    assert log_collapsed_posterior(X, new_labels, 3, **kw) > log_start


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_merge_with_gibbs_reaches_true_partition(seed):
    """Split-merge moves alone can leave one datum behind: when i and j both lie in blob A of
    the shared slot A + B, the split sends i with B ({i} + B, A - {i}), and with every slot full
    no move of whole clusters returns it. Interleaved with single-site Gibbs sweeps, which move
    it back, the chain reaches the true partition from every seed; Gibbs alone does not move two
    blobs out of one slot."""
    X, truth, start, kw = _blobs(10 + seed)
    rng = np.random.default_rng(seed)
    labels, gibbs_only, n_accepted = start, start, 0
    for _ in range(4):
        labels, accepted = split_merge(X, labels, 3, rng=rng, n_moves=60, **kw)
        n_accepted += accepted
        labels = _collapsed_gibbs_sweep(X, labels, 3, kw, rng)
        gibbs_only = _collapsed_gibbs_sweep(X, gibbs_only, 3, kw, rng)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert n_accepted >= 2
    assert adjusted_rand_score(truth, gibbs_only) < 0.9


def test_returns_copy_counts_accepted_and_validates_labels():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.standard_normal((20, 2)), rng.standard_normal((20, 2)) + 10.0])
    kw = dict(alpha=1.0, beta=0.1, mean_prior=X.mean(axis=0), scale_inv=np.eye(2), dof=3.0)
    labels = np.zeros(40, dtype=np.int32)
    original = labels.copy()
    new_labels, n_accepted = split_merge(X, labels, 2, rng=np.random.default_rng(0),
                                         n_moves=0, **kw)
    assert new_labels is not labels and new_labels.dtype == np.int64
    np.testing.assert_array_equal(new_labels, labels)
    assert n_accepted == 0

    # Count acceptances by hand, one move at a time, against the same random stream.
    current, hand_count = labels, 0
    stream = np.random.default_rng(4)
    for _ in range(60):
        after, accepted = split_merge(X, current, 2, rng=stream, n_moves=1, **kw)
        assert accepted in (0, 1)
        assert accepted == 0 or not np.array_equal(after, current)
        assert accepted == 1 or np.array_equal(after, current)
        hand_count += accepted
        current = after
    batch_labels, batch_count = split_merge(X, labels, 2, rng=np.random.default_rng(4),
                                            n_moves=60, **kw)
    assert batch_count == hand_count >= 1
    np.testing.assert_array_equal(batch_labels, current)
    np.testing.assert_array_equal(labels, original)  # the input was not modified
    np.testing.assert_array_equal(np.sort(np.bincount(current[:20], minlength=2)), [0, 20])

    # Full slots and i, j in one slot: no split possible; nothing accepted, labels unchanged.
    full, count = split_merge(X, np.zeros(40, dtype=int), 1, rng=rng, n_moves=10, **kw)
    assert count == 0 and np.all(full == 0)

    for bad in (np.full(40, 2), np.full(40, -1), np.r_[np.zeros(39, int), 5]):
        with pytest.raises(ValueError):
            split_merge(X, bad, 2, rng=rng, **kw)
    with pytest.raises(ValueError):
        split_merge(X, np.full(40, 0.5), 2, rng=rng, **kw)
    with pytest.raises(ValueError):
        log_collapsed_posterior(X, np.full(40, 3), 2, **kw)
