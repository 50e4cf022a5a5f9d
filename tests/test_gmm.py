"""The Gibbs sampler: kernels against direct formulas and scipy.stats, and behaviour."""

import numpy as np
import pytest
from scipy import stats

from vaegmm.gibbs import (
    estimate_log_gaussian_prob,
    posterior_gauss_wishart,
    sample_categorical,
    sample_means,
    sample_wishart,
    sufficient_statistics,
)
from vaegmm.gmm import GibbsGMM
from vaegmm.split_merge import log_collapsed_posterior
from sklearn.metrics import adjusted_rand_score

from vaegmm.metrics import clustering_metrics, match_clusters


def _random_spd(rng, dim, n):
    a = rng.normal(size=(n, dim, dim))
    return a @ a.transpose(0, 2, 1) + dim * np.eye(dim)


def _mixture(rng, n=900, separation=8.0):
    means = np.array([[0.0, 0.0], [separation, 0.0], [0.0, separation]])
    covs = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 2.0]], [[1.5, -0.4], [-0.4, 0.6]]])
    labels = rng.integers(3, size=n)
    X = np.stack([rng.multivariate_normal(means[k], covs[k]) for k in labels])
    return X, labels, means, covs


def test_log_gaussian_prob_matches_scipy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    means = rng.normal(size=(3, 4))
    precisions = _random_spd(rng, 4, 3)
    got = estimate_log_gaussian_prob(X, means, np.linalg.cholesky(precisions))
    for k in range(3):
        expected = stats.multivariate_normal(means[k], np.linalg.inv(precisions[k])).logpdf(X)
        np.testing.assert_allclose(got[:, k], expected, rtol=1e-10)


def test_sufficient_statistics_match_direct_sums():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    labels = rng.integers(4, size=40)
    labels[labels == 3] = 2  # cluster 3 empty
    counts, sums, outer = sufficient_statistics(X, labels, 4)
    for k in range(4):
        members = X[labels == k]
        assert counts[k] == len(members)
        np.testing.assert_allclose(sums[k], members.sum(axis=0), atol=1e-12)
        np.testing.assert_allclose(outer[k], sum((np.outer(x, x) for x in members), np.zeros((3, 3))), atol=1e-12)


def test_posterior_matches_bishop_formulas():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 3)) + 2.0
    labels = rng.integers(2, size=30)
    beta, m, W, nu = 0.7, rng.normal(size=3), _random_spd(rng, 3, 1)[0], 4.5
    beta_hat, m_hat, scale_inv_hat, dof_hat = posterior_gauss_wishart(
        *sufficient_statistics(X, labels, 2), beta, m, np.linalg.inv(W), nu
    )
    for k in range(2):
        xs = X[labels == k]
        n_k, xbar = len(xs), xs.mean(axis=0)
        # PRML eq. 10.60-10.63 in their centred form.
        S = (xs - xbar).T @ (xs - xbar)
        expected_w_inv = np.linalg.inv(W) + S + beta * n_k / (beta + n_k) * np.outer(xbar - m, xbar - m)
        assert beta_hat[k] == pytest.approx(beta + n_k)
        np.testing.assert_allclose(m_hat[k], (beta * m + n_k * xbar) / (beta + n_k))
        np.testing.assert_allclose(scale_inv_hat[k], expected_w_inv, rtol=1e-9, atol=1e-9)
        assert dof_hat[k] == pytest.approx(nu + n_k)


def test_wishart_draws_match_scipy_moments():
    rng = np.random.default_rng(3)
    W = np.array([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]])
    nu, n_draws = 5.5, 40000
    chol = np.broadcast_to(np.linalg.cholesky(np.linalg.inv(W)), (n_draws, 3, 3))
    draws = sample_wishart(chol, np.full(n_draws, nu), rng)
    reference = stats.wishart(df=nu, scale=W)
    np.testing.assert_allclose(draws.mean(axis=0), reference.mean(), atol=0.06)
    np.testing.assert_allclose(draws.var(axis=0), reference.var(), rtol=0.06, atol=0.02)
    # Every draw is symmetric positive definite.
    assert np.all(np.linalg.eigvalsh(draws[:200]) > 0)


def test_mean_draws_have_covariance_of_scaled_precision():
    rng = np.random.default_rng(4)
    precision = _random_spd(rng, 3, 1)[0]
    n_draws, beta_hat = 40000, 2.5
    m_hat = np.array([1.0, -2.0, 0.5])
    draws = sample_means(
        np.broadcast_to(m_hat, (n_draws, 3)), np.full(n_draws, beta_hat),
        np.broadcast_to(np.linalg.cholesky(precision), (n_draws, 3, 3)), rng,
    )
    np.testing.assert_allclose(draws.mean(axis=0), m_hat, atol=0.01)
    np.testing.assert_allclose(np.cov(draws.T), np.linalg.inv(beta_hat * precision), atol=0.004)


def test_categorical_draws_follow_probabilities():
    rng = np.random.default_rng(5)
    probs = np.array([0.5, 0.0, 0.2, 0.3])
    with np.errstate(divide="ignore"):
        log_prob = np.log(np.broadcast_to(probs, (60000, 4)))
    labels = sample_categorical(log_prob, rng)
    frequencies = np.bincount(labels, minlength=4) / len(labels)
    np.testing.assert_allclose(frequencies, probs, atol=0.01)
    assert frequencies[1] == 0.0


def test_recovers_known_mixture():
    rng = np.random.default_rng(6)
    X, labels, means, covs = _mixture(rng)
    gmm = GibbsGMM(3, n_sweeps=60, wishart_scale=1.0, random_state=0, init="kmeans++", n_chains=1).fit(X)
    assert adjusted_rand_score(labels, gmm.labels_) > 0.97
    mapping = match_clusters(labels, gmm.labels_)
    for cluster, true in mapping.items():
        np.testing.assert_allclose(gmm.means_[cluster], means[true], atol=0.3)
        np.testing.assert_allclose(gmm.covariances_[cluster], covs[true], atol=0.35)
    np.testing.assert_allclose(np.sort(gmm.weights_), np.sort(np.bincount(labels) / len(labels)), atol=0.05)


def test_prior_init_also_recovers_separated_clusters():
    rng = np.random.default_rng(7)
    X, labels, _, _ = _mixture(rng, separation=4.0)
    X = X / X.std()  # scale comparable to the prior, as VAE latents are
    gmm = GibbsGMM(3, n_sweeps=100, random_state=1, init="prior", n_chains=1).fit(X)
    assert adjusted_rand_score(labels, gmm.labels_) > 0.9


def test_responsibilities_do_not_underflow_far_from_every_cluster():
    rng = np.random.default_rng(8)
    X, _, _, _ = _mixture(rng, n=200)
    gmm = GibbsGMM(3, n_sweeps=10, random_state=0, init="kmeans++", n_chains=1).fit(X)
    far = np.array([[1e4, -1e4], [-5e3, 2e3]])
    proba = gmm.predict_proba(far)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(gmm.predict(far), proba.argmax(axis=1))


def test_same_seed_same_chain_and_fit_predict_equals_labels():
    rng = np.random.default_rng(9)
    X, _, _, _ = _mixture(rng, n=300)
    a = GibbsGMM(3, n_sweeps=15, random_state=42, n_chains=1).fit(X)
    b_labels = GibbsGMM(3, n_sweeps=15, random_state=42, n_chains=1).fit_predict(X)
    np.testing.assert_array_equal(a.labels_, b_labels)
    c = GibbsGMM(3, n_sweeps=15, random_state=43, n_chains=1).fit(X)
    assert not np.array_equal(a.means_, c.means_)


def test_callback_sees_every_sweep():
    rng = np.random.default_rng(10)
    X, _, _, _ = _mixture(rng, n=100)
    seen = []
    gmm = GibbsGMM(3, n_sweeps=7, random_state=0, report="last",
                   callback=lambda sweep, labels, model: seen.append((sweep, labels.copy())), n_chains=1)
    gmm.fit(X)
    assert [s for s, _ in seen] == list(range(7))
    assert clustering_metrics(seen[-1][1], gmm.labels_)["accuracy"] == 1.0  # the last draw, renumbered
    assert gmm.log_likelihood_.shape == (7,) and np.all(np.isfinite(gmm.log_likelihood_))


def test_sample_from_one_component_has_its_moments():
    rng = np.random.default_rng(11)
    X, _, _, _ = _mixture(rng, n=300)
    gmm = GibbsGMM(3, n_sweeps=10, random_state=0, init="kmeans++", n_chains=1).fit(X)
    samples, labels = gmm.sample(30000, component=1, random_state=0)
    assert np.all(labels == 1)
    np.testing.assert_allclose(samples.mean(axis=0), gmm.means_[1], atol=0.05)
    np.testing.assert_allclose(np.cov(samples.T), gmm.covariances_[1], atol=0.08)
    _, mixed = gmm.sample(30000, random_state=1)
    np.testing.assert_allclose(np.bincount(mixed, minlength=3) / 30000, gmm.weights_, atol=0.015)


def test_empty_clusters_keep_valid_parameters():
    X = np.random.default_rng(12).normal(size=(40, 2))
    gmm = GibbsGMM(10, n_sweeps=20, random_state=0, n_chains=1).fit(X)
    assert np.all(np.isfinite(gmm.means_)) and np.all(np.isfinite(gmm.precisions_))
    assert np.all(np.linalg.eigvalsh(gmm.precisions_) > 0)
    assert gmm.weights_.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_components": 50}, "at least as many data points as clusters"),
        ({"wishart_dof": 1.0}, "wishart_dof must exceed"),
        ({"alpha": 0.0}, "alpha"),
        ({"beta": -1.0}, "beta"),
        ({"wishart_scale": 0.0}, "wishart_scale"),
        ({"init": "random"}, "init"),
    ],
)
def test_bad_hyperparameters_are_refused(params, match):
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match=match):
        GibbsGMM(**{"n_components": 3, "n_sweeps": 2, **params}, n_chains=1).fit(X)


def test_predict_before_fit_and_nan_data_are_refused():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match="not fitted"):
        GibbsGMM(2, n_chains=1).predict(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        GibbsGMM(2, n_chains=1).fit(np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 2.0]]))


# -- the fast sweep kernels (monomial features, transposed categorical draw) --------------------
from vaegmm import gibbs as gibbs_module
from vaegmm.gibbs import (
    log_gaussian_coefficients,
    quadratic_features,
    sample_categorical_columns,
    sufficient_statistics_from_features,
)


def test_log_density_from_monomials_matches_scipy():
    rng = np.random.default_rng(20)
    X = rng.normal(size=(60, 4)) * 3.0 + 5.0  # off-centre, as raw latents may be
    means = rng.normal(size=(3, 4)) + 5.0
    precisions = _random_spd(rng, 4, 3)
    log_weights = np.log([0.2, 0.3, 0.5])
    coefficients = log_gaussian_coefficients(means, np.linalg.cholesky(precisions), log_weights)
    got = coefficients @ quadratic_features(X)  # (K, N)
    for k in range(3):
        expected = stats.multivariate_normal(means[k], np.linalg.inv(precisions[k])).logpdf(X) + log_weights[k]
        np.testing.assert_allclose(got[k], expected, rtol=1e-9)


def test_sufficient_statistics_from_monomials_match_direct_sums():
    rng = np.random.default_rng(21)
    X = rng.normal(size=(50, 3))
    labels = rng.integers(4, size=50)
    labels[labels == 1] = 0  # cluster 1 empty
    got = sufficient_statistics_from_features(quadratic_features(X), labels, 4, 3)
    for value, expected in zip(got, sufficient_statistics(X, labels, 4)):
        np.testing.assert_allclose(value, expected, atol=1e-12)
    assert got[0][1] == 0.0


def test_categorical_columns_normalise_and_follow_probabilities():
    rng = np.random.default_rng(22)
    probs = np.array([0.1, 0.0, 0.6, 0.3])
    with np.errstate(divide="ignore"):
        weighted = np.repeat(np.log(probs)[:, None] + 7.0, 50000, axis=1)  # unnormalised by e^7
    labels, log_norm = sample_categorical_columns(weighted.copy(), rng)
    np.testing.assert_allclose(log_norm, 7.0, atol=1e-12)
    np.testing.assert_allclose(np.bincount(labels, minlength=4) / 50000, probs, atol=0.01)
    # Huge log weights (far from every cluster) neither overflow nor underflow.
    labels, log_norm = sample_categorical_columns(np.array([[-1e5, -2e5], [-1e5 - np.log(3), -2e5]]), rng)
    np.testing.assert_allclose(log_norm, [-1e5 + np.log(4 / 3), -2e5 + np.log(2)])


def test_monomial_and_cholesky_forms_give_the_same_chain(monkeypatch):
    rng = np.random.default_rng(23)
    X, _, _, _ = _mixture(rng, n=300)
    fast = GibbsGMM(3, n_sweeps=8, random_state=5, n_chains=1).fit(X)
    monkeypatch.setattr(gibbs_module, "use_quadratic_features", lambda n_features, n_components: False)
    slow = GibbsGMM(3, n_sweeps=8, random_state=5, n_chains=1).fit(X)
    np.testing.assert_array_equal(fast.labels_, slow.labels_)
    np.testing.assert_allclose(fast.means_, slow.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(fast.log_likelihood_, slow.log_likelihood_, rtol=1e-10)


@pytest.mark.parametrize("prior", ["data", "fixed"])
def test_shifting_the_data_and_prior_shifts_the_means_only(prior):
    """The data prior follows the data by itself; the fixed one when its mean is shifted too."""
    rng = np.random.default_rng(24)
    X, _, _, _ = _mixture(rng, n=300)
    shift = np.array([100.0, -50.0])
    a = GibbsGMM(3, n_sweeps=10, random_state=3, init="kmeans++", prior=prior, n_chains=1).fit(X)
    b = GibbsGMM(3, n_sweeps=10, random_state=3, init="kmeans++", prior=prior,
                 mean_prior=shift if prior == "fixed" else None, n_chains=1).fit(X + shift)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_allclose(b.means_, a.means_ + shift, atol=1e-8)
    np.testing.assert_allclose(b.precisions_, a.precisions_, rtol=1e-8)


def test_em_start_runs_inside_the_thread_limit_on_one_thread(monkeypatch):
    """The EM start (and the read-out) run scikit-learn on one thread, whatever the BLAS/OpenMP
    pools would take, so a start never oversubscribes a busy machine."""
    from threadpoolctl import threadpool_info
    from sklearn.mixture import GaussianMixture

    from vaegmm.gibbs import em_labels

    seen = []
    fit = GaussianMixture.fit

    def spy(self, X, y=None):
        seen.append({pool["user_api"]: pool["num_threads"] for pool in threadpool_info()})
        return fit(self, X, y)

    monkeypatch.setattr(GaussianMixture, "fit", spy)
    X = np.random.default_rng(0).normal(size=(200, 3))
    em_labels(X, 3, 1, 0)
    assert seen and all(threads == 1 for threads in seen[0].values())


def test_em_start_on_identical_points_warns_once_in_our_words():
    import warnings

    from vaegmm.gibbs import em_labels

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = em_labels(np.repeat([[0.0, 1.0], [2.0, 3.0]], 5, axis=0), 3, 2, 0)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "2 distinct points for 3 clusters" in messages[0], messages
    assert sorted(set(labels)) == [0, 1] and labels[0] != labels[-1] and len(set(labels[:5])) == 1


def test_log_joint_matches_scipy():
    """log p(X, z, pi, mu, Lambda) from the statistics equals the sum of scipy's log densities."""
    from scipy.special import gammaln  # noqa: F401  (scipy.stats.dirichlet needs nothing else)

    from vaegmm.gibbs import log_joint, sufficient_statistics

    rng = np.random.default_rng(30)
    n, K, L = 40, 3, 2
    X = rng.normal(size=(n, L))
    labels = rng.integers(K, size=n)
    labels[:K] = np.arange(K)
    weights = rng.dirichlet(np.ones(K))
    means = rng.normal(size=(K, L))
    precisions = _random_spd(rng, L, K)
    alpha, beta, nu = np.full(K, 0.7), 1.3, L + 1.5
    m = rng.normal(size=L)
    scale = np.linalg.inv(_random_spd(rng, L, 1)[0])
    expected = stats.dirichlet(alpha).logpdf(weights) + np.sum(np.log(weights[labels]))
    for k in range(K):
        covariance = np.linalg.inv(precisions[k])
        expected += stats.multivariate_normal(means[k], covariance).logpdf(X[labels == k]).sum()
        expected += stats.multivariate_normal(m, covariance / beta).logpdf(means[k])
        expected += stats.wishart(df=nu, scale=scale).logpdf(precisions[k])
    got = log_joint(sufficient_statistics(X, labels, K), np.log(weights), means, precisions,
                    np.linalg.cholesky(precisions), alpha, beta, m, np.linalg.inv(scale), nu)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_block_diagonal_log_joint_matches_scipy():
    """With covariance_blocks, log_joint plus the blocks' constant is the sum of scipy's log
    densities with one Wishart per diagonal block (nu_b = L_b + nu - L)."""
    from vaegmm.gibbs import block_diagonal, log_joint, log_joint_constant, sufficient_statistics

    rng = np.random.default_rng(32)
    n, K, blocks = 40, 3, (2, 1, 3)
    L = sum(blocks)
    X = rng.normal(size=(n, L))
    labels = rng.integers(K, size=n)
    weights = rng.dirichlet(np.ones(K))
    means = rng.normal(size=(K, L))
    precisions = block_diagonal(_random_spd(rng, L, K), blocks)
    alpha, beta, nu = np.full(K, 0.7), 1.3, L + 1.5
    m = rng.normal(size=L)
    scale = np.linalg.inv(block_diagonal(_random_spd(rng, L, 1)[0], blocks))
    expected = stats.dirichlet(alpha).logpdf(weights) + np.sum(np.log(weights[labels]))
    for k in range(K):
        covariance = np.linalg.inv(precisions[k])
        expected += stats.multivariate_normal(means[k], covariance).logpdf(X[labels == k]).sum()
        expected += stats.multivariate_normal(m, covariance / beta).logpdf(means[k])
        for start, size in ((0, 2), (2, 1), (3, 3)):
            block = slice(start, start + size)
            expected += stats.wishart(df=nu - L + size, scale=scale[block, block]).logpdf(precisions[k][block, block])
    constant = log_joint_constant(alpha, beta, np.linalg.inv(scale), nu, K, L, blocks=blocks)
    got = log_joint(sufficient_statistics(X, labels, K), np.log(weights), means, precisions,
                    np.linalg.cholesky(precisions), alpha, beta, m, np.linalg.inv(scale), nu, constant)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_covariance_blocks_fit_block_diagonal_precisions():
    rng = np.random.default_rng(33)
    X2, labels, _, _ = _mixture(rng, n=600)
    # A second group of features: the same clusters seen through an independent noisy copy.
    X = np.column_stack([X2, 0.01 * X2[:, ::-1] + rng.normal(scale=0.3, size=X2.shape)])
    gmm = GibbsGMM(3, n_sweeps=30, covariance_blocks=[2, 2], n_chains=1, random_state=0).fit(X)
    assert np.all(gmm.precisions_[:, :2, 2:] == 0) and np.all(gmm.precisions_[:, 2:, :2] == 0)
    assert adjusted_rand_score(labels, gmm.labels_) > 0.95
    # One block holding every feature is the full model, draw for draw.
    full = GibbsGMM(3, n_sweeps=5, n_chains=1, random_state=1).fit(X)
    one_block = GibbsGMM(3, n_sweeps=5, covariance_blocks=(4,), n_chains=1, random_state=1).fit(X)
    np.testing.assert_array_equal(full.labels_, one_block.labels_)
    np.testing.assert_allclose(full.log_posterior_, one_block.log_posterior_, rtol=1e-12)
    for bad in ([2, 3], [4, 0], [2.5, 1.5]):
        with pytest.raises(ValueError, match="covariance_blocks must be positive integers summing to n_features = 4"):
            GibbsGMM(3, n_sweeps=2, covariance_blocks=bad).fit(X)
    with pytest.raises(ValueError, match="split_merge moves assume full covariances"):
        GibbsGMM(3, n_sweeps=2, covariance_blocks=[2, 2], split_merge=1).fit(X)


def test_map_report_is_the_most_probable_sweep_and_fit_predict_is_predict():
    rng = np.random.default_rng(31)
    X, _, _, _ = _mixture(rng, n=300, separation=3.0)
    gmm = GibbsGMM(3, n_sweeps=30, random_state=0, n_chains=1)
    labels = gmm.fit_predict(X)
    assert gmm.reported_sweep_ == int(np.flatnonzero(gmm.log_posterior_ == gmm.log_posterior_.max())[-1])
    np.testing.assert_array_equal(labels, gmm.predict(X))
    np.testing.assert_array_equal(labels, gmm.labels_)
    last = GibbsGMM(3, n_sweeps=30, random_state=0, report="last", n_chains=1).fit(X)
    np.testing.assert_allclose(last.log_posterior_, gmm.log_posterior_)  # the same chain
    assert last.reported_sweep_ == 29
    # The reported parameters are those of the chosen sweep: replay the chain up to it.
    replay = GibbsGMM(3, n_sweeps=gmm.reported_sweep_ + 1, random_state=0, report="last", n_chains=1).fit(X)
    np.testing.assert_allclose(gmm.means_, replay.means_)
    np.testing.assert_allclose(gmm.weights_, replay.weights_)


def test_data_prior_makes_the_chain_scale_free():
    """Scaling the data by c leaves the partition of every sweep unchanged under the default
    prior (it scales with the data), and the fixed prior's partition depends on c."""
    rng = np.random.default_rng(32)
    X, _, _, _ = _mixture(rng, n=300, separation=4.0)
    a = GibbsGMM(3, n_sweeps=15, random_state=1, init="kmeans++", n_chains=1).fit(X)
    for c in (0.01, 100.0):
        b = GibbsGMM(3, n_sweeps=15, random_state=1, init="kmeans++", n_chains=1).fit(c * X)
        np.testing.assert_array_equal(a.labels_, b.labels_)
        np.testing.assert_allclose(b.means_, c * a.means_, rtol=1e-6, atol=1e-9)
    tiny = GibbsGMM(3, n_sweeps=15, random_state=1, init="kmeans++", prior="fixed", n_chains=1).fit(0.01 * X)
    assert len(np.unique(tiny.labels_)) < 3  # W = 0.55 I swamps latents of scale 0.01: clusters merge


@pytest.mark.parametrize("X, phrase", [
    (np.ones((20, 3)), "all the same (zero variance)"),
    (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 1.0]]), "NaN or infinite"),
    (np.random.default_rng(0).normal(size=(2, 3)), "Got 2 data points but 3 clusters"),
])
def test_latents_without_a_prior_get_one_sentence(X, phrase):
    with pytest.raises(ValueError, match=phrase.replace("(", r"\(").replace(")", r"\)")) as error:
        GibbsGMM(3, n_sweeps=2, n_chains=1).fit(X)
    assert "\n" not in str(error.value) and str(error.value).endswith(".")


def test_gibbs_gmm_is_a_scikit_learn_estimator():
    """Every check of scikit-learn's check_estimator passes (clone, get/set_params, NotFittedError,
    input validation, fit_predict == labels_, consecutive labels, pickling, ...)."""
    import warnings

    from sklearn.exceptions import SkipTestWarning
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipTestWarning)  # the array-API check needs SCIPY_ARRAY_API
        results = check_estimator(GibbsGMM(n_sweeps=20), on_fail=None)
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) >= 45


def test_clusters_with_data_are_numbered_first():
    rng = np.random.default_rng(33)
    X, _, _, _ = _mixture(rng, n=200, separation=10.0)
    gmm = GibbsGMM(8, n_sweeps=20, random_state=2, alpha=0.01, n_chains=1).fit(X)
    used = np.unique(gmm.labels_)
    np.testing.assert_array_equal(used, np.arange(len(used)))
    np.testing.assert_array_equal(gmm.predict(X), gmm.labels_)  # the parameters followed the renumbering


def test_sample_assignments_draws_from_the_responsibilities():
    """The first half of a sweep: each datum's draw follows p(z | x) = predict_proba."""
    rng = np.random.default_rng(34)
    X, _, _, _ = _mixture(rng, n=300, separation=2.0)
    gmm = GibbsGMM(3, n_sweeps=5, random_state=0, n_chains=1).fit(X)
    point = X[:1].repeat(20000, axis=0)  # one datum, drawn many times
    draws = gmm.sample_assignments(point, random_state=1)
    frequencies = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(frequencies, gmm.predict_proba(X[:1])[0], atol=0.015)
    np.testing.assert_array_equal(gmm.sample_assignments(X, 5), gmm.sample_assignments(X, 5))


@pytest.mark.parametrize("keep", ["collapsed", "joint"])
def test_n_chains_keeps_the_chain_its_criterion_scores_highest(keep):
    rng = np.random.default_rng(35)
    X, _, _, _ = _mixture(rng, n=200, separation=2.5)
    best = GibbsGMM(3, n_sweeps=10, random_state=4, n_chains=3, init="prior", keep=keep).fit(X)
    chains = [GibbsGMM(3, n_sweeps=10, random_state=r, n_chains=1, init="prior").fit(X)
              for r in np.random.default_rng(4).spawn(3)]
    joint = [c.log_posterior_[c.reported_sweep_] for c in chains]
    collapsed = [c.log_collapsed_posterior_ for c in chains]
    np.testing.assert_allclose(best.chains_log_posterior_, joint)
    np.testing.assert_allclose(best.chains_log_collapsed_posterior_, collapsed)
    assert len(set(np.round(collapsed, 6))) > 1  # the chains' partitions differ
    assert best.best_chain_ == int(np.argmax(collapsed if keep == "collapsed" else joint))
    np.testing.assert_array_equal(best.labels_, chains[best.best_chain_].labels_)
    np.testing.assert_allclose(best.means_, chains[best.best_chain_].means_)
    with pytest.raises(ValueError, match="keep must be"):
        GibbsGMM(3, n_sweeps=1, keep="best").fit(X)


def test_collapsed_posterior_of_the_reported_assignments():
    """log_collapsed_posterior_ is log p(z | X) of labels_ under the fit's own prior."""
    rng = np.random.default_rng(36)
    X, _, _, _ = _mixture(rng, n=150, separation=3.0)
    for blocks in (None, (1, X.shape[1] - 1)):
        gmm = GibbsGMM(3, n_sweeps=5, n_chains=1, random_state=0, covariance_blocks=blocks).fit(X)
        mean_prior, scale_inv, dof = gmm._resolve_prior(X)
        expected = log_collapsed_posterior(X, gmm.labels_, 3, alpha=0.3, beta=1.0, mean_prior=mean_prior,
                                           scale_inv=scale_inv, dof=dof, blocks=blocks)
        assert gmm.log_collapsed_posterior_ == pytest.approx(expected)


def test_fits_agree_on_fixed_mnist_latents():
    """GibbsGMM(10) with its defaults, six seeds, on the latents of a round-0 VAE (30 epochs,
    shipped settings) of the 5,000 MNIST digits: the accuracy's spread over seeds is at most 0.01
    and its mean no more than 1.5 points below EM's (10 restarts, six seeds). The same setting as
    ``python -m benchmarks.chains`` (VAE seed 0); about 20 s."""
    import torch

    from vaegmm.gibbs import em_labels

    from benchmarks.chains import round0_latents

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        latents, labels = round0_latents("mnist5k", 30, 0)
    finally:
        torch.set_num_threads(threads)
    gibbs = [clustering_metrics(labels, GibbsGMM(10, random_state=s).fit(latents).labels_)["accuracy"]
             for s in range(6)]
    em = [clustering_metrics(labels, em_labels(latents, 10, 10, s))["accuracy"] for s in range(6)]
    assert np.std(gibbs, ddof=1) <= 0.01, gibbs
    assert np.mean(gibbs) >= np.mean(em) - 0.015, (gibbs, em)


def test_data_axis_prior_is_a_kth_of_the_spread_along_every_axis():
    from vaegmm.gibbs import data_scaled_prior

    rng = np.random.default_rng(36)
    X = rng.normal(size=(500, 4)) * [1.0, 2.0, 3.0, 4.0]
    covariance = np.cov(X, rowvar=False)
    for per_axis, divisor in ((False, 10 ** (2 / 4)), (True, 10 ** 2)):
        mean, scale = data_scaled_prior(X, 10, 4.0, per_axis=per_axis)
        expected = covariance / divisor
        expected += 1e-6 * np.trace(expected) / 4 * np.eye(4)
        np.testing.assert_allclose(np.linalg.inv(4.0 * scale), expected, rtol=1e-10)  # E[Lambda^-1] = W^-1 / nu
        np.testing.assert_allclose(mean, X.mean(axis=0))
    gmm = GibbsGMM(3, n_sweeps=3, prior="data-axis", random_state=0, n_chains=1).fit(X)
    assert gmm.means_.shape == (3, 4)
