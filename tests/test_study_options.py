"""The options of the accuracy study: how the prior is formed from the chain, where each
round's chain starts, several chains, and the convolutional VAE."""

import json

import numpy as np
import pytest
import torch

from vaegmm.config import ConfigError, TrainConfig
from vaegmm.data import load_dataset
from vaegmm.gmm import GibbsGMM
from vaegmm.messages import PriorMessage, SweepAverager, responsibility_moments
from vaegmm.modules import GMMModule
from vaegmm.mutual import fit_mutual
from vaegmm.rundir import RunDirectory
from vaegmm.vae import VAE, negative_elbo_terms

from test_gmm import _mixture


def _fitted_gmm(seed=0):
    rng = np.random.default_rng(seed)
    X, labels, _, _ = _mixture(rng, n=300)
    return X, labels, GibbsGMM(3, n_sweeps=20, init="kmeans++", random_state=seed, n_chains=1).fit(X)


def test_responsibility_moments_match_the_mixture_moments_of_each_datum():
    X, _, gmm = _fitted_gmm()
    X = X[:20] + np.random.default_rng(1).normal(scale=3.0, size=(20, 2))  # some data between clusters
    mean, covariance = responsibility_moments(gmm, X)
    resp = gmm.predict_proba(X)
    for n in range(len(X)):
        expected_mean = sum(resp[n, k] * gmm.means_[k] for k in range(3))
        second = sum(resp[n, k] * (gmm.covariances_[k] + np.outer(gmm.means_[k], gmm.means_[k])) for k in range(3))
        np.testing.assert_allclose(mean[n], expected_mean, atol=1e-10)
        np.testing.assert_allclose(covariance[n], second - np.outer(expected_mean, expected_mean), atol=1e-8)


def test_sweep_averager_matches_the_average_over_the_last_sweeps():
    X, _, _ = _fitted_gmm()
    recorded = []
    averager = SweepAverager(first=15)

    def record(sweep, labels, gmm):
        averager(sweep, labels, gmm)
        if sweep >= 15:
            recorded.append((labels.copy(), gmm.means_.copy(), gmm.covariances_.copy()))

    GibbsGMM(3, n_sweeps=20, init="kmeans++", random_state=3, callback=record, n_chains=1).fit(X)
    assert averager.count == len(recorded) == 5
    mean, covariance = averager.moments()
    n = 7  # one datum, by the definition: moments of the equal mixture of its 5 cluster Gaussians
    means = np.array([m[z[n]] for z, m, _ in recorded])
    covs = np.array([c[z[n]] for z, _, c in recorded])
    expected_mean = means.mean(axis=0)
    expected_cov = covs.mean(axis=0) + np.cov(means.T, bias=True)
    np.testing.assert_allclose(mean[n], expected_mean, atol=1e-10)
    np.testing.assert_allclose(covariance[n], expected_cov, atol=1e-8)


def test_prior_from_moments_gives_the_diagonal_or_the_inverse():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 3, 3))
    covariance = a @ a.transpose(0, 2, 1) + np.eye(3)
    mean = rng.normal(size=(4, 3))
    diag = PriorMessage.from_moments(mean, covariance, "diag", "cpu")
    full = PriorMessage.from_moments(mean, covariance, "full", "cpu")
    np.testing.assert_allclose(diag.var.numpy(), np.diagonal(covariance, axis1=1, axis2=2), rtol=1e-6)
    np.testing.assert_allclose(full.precision.numpy() @ covariance, np.broadcast_to(np.eye(3), (4, 3, 3)), atol=1e-4)
    np.testing.assert_allclose(full.mean.numpy(), mean, rtol=1e-6)


def test_chain_started_from_true_labels_keeps_them_and_bad_labels_are_refused():
    X, labels, _ = _fitted_gmm()
    gmm = GibbsGMM(3, n_sweeps=1, random_state=0, n_chains=1).fit(X, init_labels=labels)
    assert np.mean(gmm.labels_ == labels) > 0.99  # first sweep already at the truth, no relabelling
    with pytest.raises(ValueError, match="init_labels must lie in 0..2"):
        GibbsGMM(3, n_sweeps=1, n_chains=1).fit(X, init_labels=np.full(len(X), 3))
    with pytest.raises(ValueError, match="one per data point"):
        GibbsGMM(3, n_sweeps=1, n_chains=1).fit(X, init_labels=labels[:-1])


@pytest.mark.parametrize("keep", ["collapsed", "joint"])
def test_several_chains_keep_the_one_gmm_keep_scores_highest(keep):
    """The chain kept is the one whose reported state has the highest joint log posterior
    (gmm_keep="joint", the default), or whose reported assignments have the highest collapsed log
    posterior ("collapsed")."""
    X, labels, _ = _fitted_gmm()
    config = TrainConfig(n_clusters=3, gmm_sweeps=15, gmm_chains=4, latent_dim=2, device="cpu", gmm_init="prior",
                         gmm_keep=keep)
    seed = np.random.SeedSequence(5)
    module = GMMModule(config, labels, torch.device("cpu")).fit(X, seed, progress=False)
    gmm, sweeps, prior = module.gmm, module.sweeps, module.message()
    scores = []
    for child in [np.random.SeedSequence(5)] + list(np.random.SeedSequence(5).spawn(3)):
        chain = module.sampler(X, random_state=np.random.default_rng(child)).fit(X)
        scores.append(chain.log_collapsed_posterior_ if keep == "collapsed"
                      else chain.log_posterior_[chain.reported_sweep_])
    assert len(set(scores)) > 1  # the chains differ
    kept = gmm.log_collapsed_posterior_ if keep == "collapsed" else gmm.log_posterior_[gmm.reported_sweep_]
    assert kept == max(scores)
    assert len(sweeps["accuracy"]) == 15 and prior.mean.shape == (len(X), 2)


@pytest.mark.parametrize("shape", [(28, 28), (8, 8), (30, 27)])
def test_conv_vae_shapes_and_gradients(shape):
    pixels = shape[0] * shape[1]
    vae = VAE(pixels, 5, (32,), "conv", shape, (4, 8))
    images = torch.rand(6, pixels)
    reconstruction, kl = negative_elbo_terms(vae, images, torch.zeros(6, 5), torch.ones(6, 5))
    assert reconstruction.shape == kl.shape == (6,)
    (reconstruction + kl).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vae.parameters())
    assert vae.decode(torch.zeros(2, 5)).shape == (2, pixels)
    with pytest.raises(ValueError, match="image_shape"):
        VAE(pixels, 5, architecture="conv", image_shape=(shape[0], shape[1] + 1))


def test_conv_run_is_saved_and_reloaded(tmp_path):
    dataset = load_dataset("digits", max_samples=200)
    config = TrainConfig(data="digits", max_samples=200, vae_epochs=2, gmm_sweeps=3, latent_dim=3, n_clusters=4,
                         hidden_dims=(16,), architecture="conv", conv_channels=(4, 8), device="cpu",
                         prior_from="responsibilities", prior_covariance="full")
    result = fit_mutual(dataset, config, run_dir=tmp_path / "run", progress=False, log=None)
    run = RunDirectory(tmp_path / "run")
    vae, _ = run.load_vae(1, "cpu")
    assert vae.architecture == "conv" and vae.conv_channels == (4, 8)
    images = torch.as_tensor(dataset.flat())
    torch.testing.assert_close(vae.encode(images)[0], result.vae.eval().encode(images)[0])
    prior = run.load_prior(0)
    assert prior["mean"].shape == (200, 3) and prior["precision"].shape == (200, 3, 3)


def test_study_options_are_validated():
    with pytest.raises(ConfigError, match="prior_sweeps = 20 exceeds gmm_sweeps = 10"):
        TrainConfig(prior_from="average", prior_sweeps=20, gmm_sweeps=10)
    with pytest.raises(ConfigError, match="prior_from must be one of"):
        TrainConfig(prior_from="mode")
    with pytest.raises(ConfigError, match="conv_channels"):
        TrainConfig(conv_channels=(8,))
    with pytest.raises(ConfigError, match="gmm_chains"):
        TrainConfig(gmm_chains=0)


def test_config_saved_before_prior_from_existed_reloads_as_the_last_sweep_prior(tmp_path):
    values = TrainConfig().to_dict()
    del values["prior_from"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    assert TrainConfig.from_json(path).prior_from == "last"
    assert TrainConfig().prior_from == "responsibilities"
