"""The VAE and its closed-form KL terms, against torch.distributions."""

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vaegmm.vae import LOGVAR_MAX, LOGVAR_MIN, VAE, kl_to_diagonal_prior, kl_to_full_prior, negative_elbo_terms


def _posterior(batch=6, dim=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=gen, dtype=torch.float64), torch.randn(batch, dim, generator=gen, dtype=torch.float64)


def test_diagonal_kl_matches_torch_distributions():
    mean, logvar = _posterior()
    prior_mean = torch.randn(6, 4, dtype=torch.float64)
    prior_var = torch.rand(6, 4, dtype=torch.float64) + 0.1
    expected = kl_divergence(Normal(mean, torch.exp(0.5 * logvar)), Normal(prior_mean, prior_var.sqrt())).sum(-1)
    torch.testing.assert_close(kl_to_diagonal_prior(mean, logvar, prior_mean, prior_var), expected)


def test_full_kl_matches_torch_distributions():
    mean, logvar = _posterior()
    prior_mean = torch.randn(6, 4, dtype=torch.float64)
    a = torch.randn(6, 4, 4, dtype=torch.float64)
    precision = a @ a.transpose(1, 2) + 0.5 * torch.eye(4, dtype=torch.float64)
    q = MultivariateNormal(mean, covariance_matrix=torch.diag_embed(torch.exp(logvar)))
    p = MultivariateNormal(prior_mean, precision_matrix=precision)
    torch.testing.assert_close(kl_to_full_prior(mean, logvar, prior_mean, precision), kl_divergence(q, p))


def test_full_kl_with_diagonal_precision_equals_diagonal_kl():
    mean, logvar = _posterior()
    prior_mean = torch.randn(6, 4, dtype=torch.float64)
    prior_var = torch.rand(6, 4, dtype=torch.float64) + 0.1
    torch.testing.assert_close(
        kl_to_full_prior(mean, logvar, prior_mean, torch.diag_embed(1.0 / prior_var)),
        kl_to_diagonal_prior(mean, logvar, prior_mean, prior_var),
    )


def test_kl_is_zero_when_posterior_equals_prior():
    mean, logvar = _posterior()
    kl = kl_to_diagonal_prior(mean, logvar, mean, torch.exp(logvar))
    torch.testing.assert_close(kl, torch.zeros(6, dtype=torch.float64))


def test_negative_elbo_terms_are_bce_and_kl_per_datum():
    torch.manual_seed(0)
    vae = VAE(input_dim=20, latent_dim=3, hidden_dims=(8,))
    images = torch.rand(5, 20)
    prior_mean, prior_var = torch.zeros(5, 3), torch.ones(5, 3)
    noise = torch.Generator().manual_seed(1)
    reconstruction, kl = negative_elbo_terms(vae, images, prior_mean, prior_var, generator=noise)
    mean, logvar = vae.encode(images)
    logits = vae.decode(vae.reparameterize(mean, logvar, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(reconstruction, F.binary_cross_entropy_with_logits(logits, images, reduction="none").sum(-1))
    torch.testing.assert_close(kl, kl_to_diagonal_prior(mean, logvar, prior_mean, prior_var))
    with pytest.raises(ValueError, match="exactly one"):
        negative_elbo_terms(vae, images, prior_mean)


def test_shapes_and_bounded_logvar():
    vae = VAE(input_dim=30, latent_dim=5, hidden_dims=(16, 8))
    with torch.no_grad():
        vae.to_logvar.bias.fill_(1e4)  # an encoder gone wild still gives a finite variance
        logits, mean, logvar = vae(torch.rand(7, 30))
    assert logits.shape == (7, 30) and mean.shape == (7, 5) and logvar.shape == (7, 5)
    assert float(logvar.max()) <= LOGVAR_MAX and float(logvar.min()) >= LOGVAR_MIN
    assert VAE(**vae.config()).config() == vae.config()
