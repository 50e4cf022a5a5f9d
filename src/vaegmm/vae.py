"""Variational autoencoder with a per-datum Gaussian prior on its latent.

The encoder q_phi(x | o) = N(m_phi(o), diag(exp(logvar_phi(o)))) and the Bernoulli decoder
p_theta(o | x) follow Kingma & Welling (2014), Appendix C; the KL term is against a Gaussian
prior that may differ per datum (the GMM's message), in closed form (Appendix B generalised to
a non-standard prior; full-covariance case: the Gaussian KL of e.g. Murphy, PML1 §6.2.3).

The VAE knows nothing of the GMM: it receives prior means and (co)variances per datum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VAE", "kl_to_diagonal_prior", "kl_to_full_prior", "negative_elbo_terms"]

# Bounds on the encoder's log-variance keep exp(logvar) and the KL finite (variance in
# [e^-12, e^8] ~ [6e-6, 3e3]); latents of a trained VAE live far inside this range.
LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


class VAE(nn.Module):
    """MLP VAE: encoder ``input_dim -> hidden_dims -> 2 * latent_dim``, decoder mirrored.

    Parameters
    ----------
    input_dim : int, default=784
        Number of pixels per image.
    latent_dim : int, default=12
    hidden_dims : tuple of int, default=(256,)
        Widths of the hidden layers of the encoder; the decoder uses them reversed.
    """

    def __init__(self, input_dim=784, latent_dim=12, hidden_dims=(256,)):
        super().__init__()
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        widths = (self.input_dim, *self.hidden_dims)
        self.encoder = _mlp(widths)
        self.to_mean = nn.Linear(widths[-1], self.latent_dim)
        self.to_logvar = nn.Linear(widths[-1], self.latent_dim)
        decoder_widths = (self.latent_dim, *reversed(self.hidden_dims))
        self.decoder = nn.Sequential(_mlp(decoder_widths), nn.Linear(decoder_widths[-1], self.input_dim))

    def config(self):
        """Constructor arguments, enough to rebuild this architecture."""
        return {"input_dim": self.input_dim, "latent_dim": self.latent_dim, "hidden_dims": list(self.hidden_dims)}

    def encode(self, images):
        """(B, input_dim) in [0, 1] -> mean (B, L), logvar (B, L)."""
        hidden = self.encoder(images.reshape(images.shape[0], -1))
        logvar = self.to_logvar(hidden).clamp(LOGVAR_MIN, LOGVAR_MAX)
        return self.to_mean(hidden), logvar

    @staticmethod
    def reparameterize(mean, logvar, generator=None):
        """x = mean + exp(logvar / 2) * eps, eps ~ N(0, I)."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    def decode(self, latents):
        """(B, L) -> Bernoulli logits (B, input_dim)."""
        return self.decoder(latents)

    def forward(self, images, generator=None):
        """Returns (logits (B, input_dim), mean (B, L), logvar (B, L))."""
        mean, logvar = self.encode(images)
        return self.decode(self.reparameterize(mean, logvar, generator)), mean, logvar


def _mlp(widths):
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers)


def kl_to_diagonal_prior(mean, logvar, prior_mean, prior_var):
    """KL(N(mean, diag e^logvar) || N(prior_mean, diag prior_var)) per datum.

    Parameters
    ----------
    mean, logvar : Tensor of shape (B, L)
    prior_mean, prior_var : Tensor of shape (B, L) (or broadcastable)

    Returns
    -------
    kl : Tensor of shape (B,)
    """
    var = torch.exp(logvar)
    return 0.5 * torch.sum(
        torch.log(prior_var) - logvar + (var + (mean - prior_mean) ** 2) / prior_var - 1.0, dim=-1
    )


def kl_to_full_prior(mean, logvar, prior_mean, prior_precision):
    """KL(N(mean, diag e^logvar) || N(prior_mean, prior_precision^-1)) per datum.

    ``0.5 [tr(P S) + d^T P d - L - log det P - sum logvar]`` with P the prior precision,
    S = diag(e^logvar) and d = prior_mean - mean.

    Parameters
    ----------
    mean, logvar : Tensor of shape (B, L)
    prior_mean : Tensor of shape (B, L)
    prior_precision : Tensor of shape (B, L, L)

    Returns
    -------
    kl : Tensor of shape (B,)
    """
    diff = prior_mean - mean  # (B, L)
    trace = torch.sum(torch.diagonal(prior_precision, dim1=-2, dim2=-1) * torch.exp(logvar), dim=-1)
    mahalanobis = torch.einsum("bi,bij,bj->b", diff, prior_precision, diff)
    chol = torch.linalg.cholesky(prior_precision)
    log_det = 2.0 * torch.sum(torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)), dim=-1)
    return 0.5 * (trace + mahalanobis - mean.shape[-1] - log_det - torch.sum(logvar, dim=-1))


def negative_elbo_terms(vae, images, prior_mean, prior_var=None, prior_precision=None, generator=None):
    """Per-datum reconstruction loss and KL of a batch, against a diagonal or a full prior.

    Parameters
    ----------
    vae : VAE
    images : Tensor of shape (B, input_dim), pixels in [0, 1]
    prior_mean : Tensor of shape (B, L)
    prior_var : Tensor of shape (B, L), diagonal prior variances; or
    prior_precision : Tensor of shape (B, L, L), full prior precision matrices (exactly one of
        the two is given)

    Returns
    -------
    reconstruction : Tensor of shape (B,), -log p(o | x) summed over pixels (Bernoulli)
    kl : Tensor of shape (B,)
    """
    logits, mean, logvar = vae(images, generator)
    reconstruction = F.binary_cross_entropy_with_logits(logits, images, reduction="none").sum(dim=-1)
    if (prior_var is None) == (prior_precision is None):
        raise ValueError("Give exactly one of prior_var and prior_precision.")
    if prior_precision is not None:
        kl = kl_to_full_prior(mean, logvar, prior_mean, prior_precision)
    else:
        kl = kl_to_diagonal_prior(mean, logvar, prior_mean, prior_var)
    return reconstruction, kl

