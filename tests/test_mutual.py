"""The mutual-learning loop: the per-datum prior follows its datum, messages, reproducibility."""

import numpy as np
import pytest
import torch

from vaegmm.config import ConfigError, TrainConfig
from vaegmm.data import ImageDataset, load_dataset
from vaegmm.gmm import GibbsGMM
from vaegmm.messages import PriorMessage
from vaegmm.mutual import fit_mutual
from vaegmm.vae import encode, fit_vae
from vaegmm.vae import VAE


def _two_pattern_images(n=256, seed=0):
    """Noisy images of two patterns (left half lit / right half lit), labels 0/1, interleaved."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.random((n, 8, 8)).astype(np.float32) * 0.2
    images[labels == 0, :, :4] += 0.8
    images[labels == 1, :, 4:] += 0.8
    return np.clip(images, 0, 1), labels


def test_prior_batch_returns_the_rows_of_the_indexed_data():
    mean = torch.arange(20.0).reshape(10, 2)
    prior = PriorMessage(mean, var=mean + 100)
    indices = torch.tensor([7, 2, 9])
    batch_mean, batch_var, batch_precision = prior.batch(indices)
    torch.testing.assert_close(batch_mean, mean[indices])
    torch.testing.assert_close(batch_var, mean[indices] + 100)
    assert batch_precision is None


def test_per_datum_prior_follows_shuffled_data():
    """Each datum is pulled towards its own prior mean through shuffled minibatches.

    The prior of class-0 images sits at +4 on every latent axis and that of class-1 images at
    -4. With data interleaved and minibatches reshuffled every epoch, only a prior indexed by
    the data's own indices can teach the encoder to separate the classes by sign; a prior
    indexed by batch position (the reference's bug) gives each image a random target.
    """
    torch.manual_seed(0)
    images, labels = _two_pattern_images()
    images = torch.as_tensor(images.reshape(len(images), -1))
    targets = torch.where(torch.as_tensor(labels)[:, None] == 0, 4.0, -4.0).expand(-1, 2).contiguous()
    prior = PriorMessage(targets, var=torch.full_like(targets, 0.25))
    vae = VAE(input_dim=64, latent_dim=2, hidden_dims=(32,))
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    fit_vae(vae, optimizer, images, prior, epochs=40, batch_size=16, shuffle=True,
            generator=torch.Generator().manual_seed(0), progress=False)
    latents = encode(vae, images)
    assert np.all(latents[labels == 0] > 1.5)
    assert np.all(latents[labels == 1] < -1.5)


def test_prior_from_gmm_sends_each_datum_its_cluster():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(-3, 0.5, (30, 3)), rng.normal(3, 0.5, (30, 3))])
    gmm = GibbsGMM(2, n_sweeps=10, random_state=0, init="kmeans++", n_chains=1).fit(X)
    assignments = gmm.labels_
    diag = PriorMessage.from_gmm(gmm, assignments, "diag", "cpu")
    np.testing.assert_allclose(diag.mean.numpy(), gmm.means_[assignments], rtol=1e-6)
    # The diagonal of the covariance Lambda^-1, not the inverse of Lambda's diagonal.
    covariance_diagonals = np.diagonal(np.linalg.inv(gmm.precisions_), axis1=1, axis2=2)
    np.testing.assert_allclose(diag.var.numpy(), covariance_diagonals[assignments], rtol=1e-5)
    full = PriorMessage.from_gmm(gmm, assignments, "full", "cpu")
    np.testing.assert_allclose(full.precision.numpy(), gmm.precisions_[assignments], rtol=1e-5)
    assert full.var is None


def _tiny_config(**changes):
    values = dict(data="digits", vae_epochs=2, gmm_sweeps=4, latent_dim=3, n_clusters=5, batch_size=64,
                  hidden_dims=(32,), device="cpu", manifold="none")
    return TrainConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", max_samples=300)


def test_same_seed_same_run(digits):
    first = fit_mutual(digits, _tiny_config(seed=3), progress=False, log=None)
    second = fit_mutual(digits, _tiny_config(seed=3), progress=False, log=None)
    for a, b in zip(first.rounds, second.rounds):
        assert a.elbo == b.elbo
        np.testing.assert_array_equal(a.assignments, b.assignments)
        np.testing.assert_array_equal(a.gmm.means_, b.gmm.means_)
    other = fit_mutual(digits, _tiny_config(seed=4), progress=False, log=None)
    assert other.rounds[0].elbo != first.rounds[0].elbo


@pytest.mark.parametrize(
    "options",
    [
        {"prior_covariance": "full"},
        {"send": "sample"},
        {"vae_init": "warm"},
        {"gmm_init": "kmeans++", "kl_weight": 0.5},
        {"mutual_iterations": 3},
        {"prior_from": "last"},
        {"prior_from": "average", "prior_sweeps": 3, "prior_covariance": "full"},
        {"chain_init": "previous", "gmm_chains": 2, "mutual_iterations": 3},
        {"architecture": "conv", "conv_channels": (4, 8)},
    ],
)
def test_every_option_runs_and_reports_finite_metrics(digits, options):
    result = fit_mutual(digits, _tiny_config(**options), progress=False, log=None)
    assert len(result.rounds) == result.config.mutual_iterations
    for round_result in result.rounds:
        assert np.all(np.isfinite(round_result.elbo))
        assert 0.0 <= round_result.metrics["accuracy"] <= 1.0
        assert len(round_result.sweeps["accuracy"]) == result.config.gmm_sweeps
        assert round_result.latents.shape == (len(digits), 3)


def test_round_zero_prior_is_standard_normal_and_no_labels_means_null_metrics(digits):
    unlabelled = ImageDataset(digits.images, None, "unlabelled")
    result = fit_mutual(unlabelled, _tiny_config(mutual_iterations=1), progress=False, log=None)
    assert result.rounds[0].metrics["accuracy"] is None and result.rounds[0].metrics["nmi"] is None
    assert "accuracy" not in result.rounds[0].sweeps


def test_fewer_data_than_clusters_is_refused(digits):
    with pytest.raises(ValueError, match="clusters"):
        fit_mutual(digits.subset(np.arange(4)), _tiny_config(), progress=False, log=None)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"n_clusters": 0}, "n_clusters"),
        ({"batch_size": -1}, "batch_size"),
        ({"wishart_dof": 1.0}, "wishart_dof"),
        ({"alpha": 0.0}, "alpha"),
        ({"send": "median"}, "send"),
    ],
)
def test_bad_config_values_are_refused(changes, match):
    with pytest.raises(ConfigError, match=match):
        _tiny_config(**changes)


def test_unknown_config_keys_are_refused():
    with pytest.raises(ConfigError, match="Unknown config keys: vae_epoch"):
        TrainConfig.from_dict({"vae_epoch": 3})
    config = _tiny_config(seed=9)
    assert TrainConfig.from_dict(config.to_dict()) == config
