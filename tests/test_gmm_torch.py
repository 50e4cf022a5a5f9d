"""The torch backend of the Gibbs sampler (``GibbsGMM(device=...)``), tested on CPU.

Its per-datum steps against the NumPy kernels and scipy.stats; its draws of z against the
responsibilities; its chains against known mixtures and against the NumPy sampler's.
"""

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import adjusted_rand_score

from vaegmm.gibbs import quadratic_features, sufficient_statistics
from vaegmm.gmm import GibbsGMM
from vaegmm.gmm_torch import TorchSweepData, sample_categorical_columns
from vaegmm.metrics import match_clusters

from test_gmm import _mixture, _random_spd  # the same synthetic data as the NumPy sampler's tests


def test_monomials_on_the_device_match_numpy():
    X = np.random.default_rng(0).normal(size=(40, 5))
    data = TorchSweepData(X, 3, "cpu", seed=0)
    np.testing.assert_allclose(data.features.numpy(), quadratic_features(X), rtol=1e-15)


def test_log_likelihood_matches_scipy_and_statistics_match_direct_sums():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    means, precisions = rng.normal(size=(4, 3)), _random_spd(rng, 3, 4)
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    data = TorchSweepData(X, 4, "cpu", seed=0)
    labels, log_likelihood = data.sample_labels(means, np.linalg.cholesky(precisions), np.log(weights))
    mixture = sum(w * stats.multivariate_normal(m, np.linalg.inv(p)).pdf(X) for w, m, p in zip(weights, means, precisions))
    assert log_likelihood == pytest.approx(np.log(mixture).sum(), rel=1e-10)
    assert labels.dtype == np.int64 and labels.shape == (80,)
    for got, expected in zip(data.sufficient_statistics(labels), sufficient_statistics(X, labels, 4)):
        np.testing.assert_allclose(got, expected, atol=1e-12)
    other = rng.integers(4, size=80)  # labels that are not the last draw
    for got, expected in zip(data.sufficient_statistics(other), sufficient_statistics(X, other, 4)):
        np.testing.assert_allclose(got, expected, atol=1e-12)


def test_categorical_draws_follow_probabilities():
    probs = torch.tensor([0.5, 0.0, 0.2, 0.3], dtype=torch.float64)
    weighted = (probs.log() - 3.0)[:, None].repeat(1, 60000)  # unnormalised
    labels, log_norm = sample_categorical_columns(weighted, torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_norm, torch.full((60000,), -3.0, dtype=torch.float64))
    frequencies = torch.bincount(labels, minlength=4).double() / 60000
    np.testing.assert_allclose(frequencies.numpy(), probs.numpy(), atol=0.01)
    assert frequencies[1] == 0.0


def test_draws_of_z_have_the_responsibilities_as_frequencies():
    """Repeated draws of z for fixed parameters: per datum, frequencies = p(z = k | x)."""
    rng = np.random.default_rng(2)
    X, _, means, covs = _mixture(rng, n=30, separation=2.0)  # overlapping: non-trivial responsibilities
    precisions = np.linalg.inv(covs)
    log_weights = np.log([0.3, 0.3, 0.4])
    model = GibbsGMM.from_parameters(means, precisions, np.exp(log_weights))
    expected = model.predict_proba(X)  # (N, K), NumPy kernels
    data = TorchSweepData(X, 3, "cpu", seed=3)
    n_draws = 4000
    counts = np.zeros((30, 3))
    for _ in range(n_draws):
        labels, _ = data.sample_labels(means, np.linalg.cholesky(precisions), log_weights)
        counts[np.arange(30), labels] += 1
    np.testing.assert_allclose(counts / n_draws, expected, atol=4.5 * 0.5 / np.sqrt(n_draws))


def test_torch_backend_recovers_known_mixture():
    rng = np.random.default_rng(6)
    X, labels, means, covs = _mixture(rng)
    gmm = GibbsGMM(3, n_sweeps=60, wishart_scale=1.0, random_state=0, init="kmeans++", device="cpu", n_chains=1).fit(X)
    assert adjusted_rand_score(labels, gmm.labels_) > 0.97
    for cluster, true in match_clusters(labels, gmm.labels_).items():
        np.testing.assert_allclose(gmm.means_[cluster], means[true], atol=0.3)
        np.testing.assert_allclose(gmm.covariances_[cluster], covs[true], atol=0.35)
    assert isinstance(gmm.means_, np.ndarray) and gmm.labels_.dtype == np.int64


def test_torch_and_numpy_chains_have_the_same_posterior_moments():
    """Posterior mean and spread of the cluster means over a long chain agree between backends."""
    rng = np.random.default_rng(7)
    X, labels, _, _ = _mixture(rng, n=300, separation=6.0)
    summaries = []
    for device in (None, "cpu"):
        draws = []
        model = GibbsGMM(3, n_sweeps=400, random_state=11, init="kmeans++", device=device,
                         callback=lambda sweep, z, m: draws.append(m.means_.copy()) if sweep >= 50 else None, n_chains=1)
        model.fit(X)
        draws = np.stack(draws)  # (S, K, L)
        posterior_mean = draws.mean(axis=0)
        draws = draws[:, np.argsort(posterior_mean[:, 0] + 10 * posterior_mean[:, 1])]  # clusters in a fixed order
        summaries.append((draws.mean(axis=0), draws.std(axis=0)))
    (mean_np, std_np), (mean_torch, std_torch) = summaries
    # Posterior sd of each coordinate is ~0.1; over 350 correlated sweeps the Monte Carlo error
    # of a posterior mean is ~0.01, and of a posterior sd ~10%.
    np.testing.assert_allclose(mean_torch, mean_np, atol=0.05)
    np.testing.assert_allclose(std_torch, std_np, rtol=0.3)


def test_same_seed_same_chain_on_torch():
    rng = np.random.default_rng(9)
    X, _, _, _ = _mixture(rng, n=300)
    a = GibbsGMM(3, n_sweeps=15, random_state=42, device="cpu", n_chains=1).fit(X)
    b = GibbsGMM(3, n_sweeps=15, random_state=42, device="cpu", n_chains=1).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.means_, b.means_)


def test_cuda_device_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        GibbsGMM(2, n_sweeps=2, device="cuda", n_chains=1).fit(np.random.default_rng(0).normal(size=(10, 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_backend_recovers_known_mixture():
    rng = np.random.default_rng(6)
    X, labels, _, _ = _mixture(rng)
    gmm = GibbsGMM(3, n_sweeps=60, wishart_scale=1.0, random_state=0, init="kmeans++", device="cuda", n_chains=1).fit(X)
    assert adjusted_rand_score(labels, gmm.labels_) > 0.97
