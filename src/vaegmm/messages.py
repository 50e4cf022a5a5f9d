"""The GMM's messages to the VAE (SPEC §2, step 4): the prior of every datum's latent.

:class:`PriorMessage` is what the VAE step reads (its ``kl``); :func:`prior_message` forms it
from a fitted :class:`~vaegmm.gmm.GibbsGMM` as ``TrainConfig.prior_from`` asks:

- ``"responsibilities"`` (default): the Gaussian moment-matched to datum n's mixture
  sum_k r_nk N(mu_k, Lambda_k^-1) under the last sweep's parameters;
- ``"last"`` (the reference): (mu_{z_n}, Lambda_{z_n}^-1) of its last-sweep assignment;
- ``"average"``: the Gaussian moment-matched to its clusters over the last sweeps
  (:class:`SweepAverager` collects them during the chain);
- ``"mixture"``: the GMM itself, shared by every datum (VaDE's KL).

A new message is a new branch of :func:`prior_message` (and, if its KL is new, of
:meth:`PriorMessage.kl`); neither the VAE nor the loop changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .vae import kl_to_diagonal_prior, kl_to_full_prior, kl_to_mixture_prior

__all__ = ["PriorMessage", "SweepAverager", "prior_message", "responsibility_moments", "mixture_moments"]


@dataclass
class PriorMessage:
    """The GMM's message to the VAE: the prior of every datum's latent.

    Two forms:

    - a **Gaussian per datum** (``log_weights`` None): ``mean`` (N, L) and ``var`` (N, L)
      (diagonal) or ``precision`` (N, L, L); the VAE's KL is to datum n's own Gaussian;
    - the **mixture** (``log_weights`` given): ``log_weights`` (K,), ``mean`` (K, L) and ``var``
      (K, L) or ``precision`` (K, L, L), shared by every datum; the VAE's KL is
      :func:`~vaegmm.vae.kl_to_mixture_prior`, which recomputes each datum's responsibilities
      from its current latent in every batch (VaDE's closed form).

    Attributes
    ----------
    mean : Tensor of shape (N, L) or (K, L)
    var : Tensor of shape (N, L) or (K, L), diagonal variances, or None
    precision : Tensor of shape (N, L, L) or (K, L, L), or None
    log_weights : Tensor of shape (K,), or None
    """

    mean: torch.Tensor
    var: Optional[torch.Tensor] = None
    precision: Optional[torch.Tensor] = None
    log_weights: Optional[torch.Tensor] = None

    @classmethod
    def standard_normal(cls, n_samples, latent_dim, device):
        return cls(torch.zeros(n_samples, latent_dim, device=device), var=torch.ones(n_samples, latent_dim, device=device))

    @classmethod
    def from_gmm(cls, gmm, assignments, covariance, device):
        """Each datum's cluster mean and covariance (its diagonal) or precision (full)."""
        mean = torch.as_tensor(gmm.means_[assignments], dtype=torch.float32, device=device)
        if covariance == "full":
            precision = torch.as_tensor(gmm.precisions_, dtype=torch.float32, device=device)
            return cls(mean, precision=precision[torch.as_tensor(assignments, device=device)])
        variances = np.diagonal(gmm.covariances_, axis1=1, axis2=2)  # (K, L): diag of Lambda^-1
        return cls(mean, var=torch.as_tensor(variances[assignments], dtype=torch.float32, device=device))

    @classmethod
    def mixture(cls, gmm, covariance, device):
        """The GMM itself (its weights, means and covariances' diagonals or precisions) as
        the prior shared by every datum."""
        as_tensor = lambda array: torch.as_tensor(np.array(array), dtype=torch.float32, device=device)  # noqa: E731
        log_weights = as_tensor(np.log(np.maximum(gmm.weights_, np.finfo(np.float64).tiny)))
        if covariance == "full":
            return cls(as_tensor(gmm.means_), precision=as_tensor(gmm.precisions_), log_weights=log_weights)
        variances = np.diagonal(gmm.covariances_, axis1=1, axis2=2)
        return cls(as_tensor(gmm.means_), var=as_tensor(variances), log_weights=log_weights)

    @classmethod
    def from_moments(cls, mean, covariance_matrices, covariance, device):
        """Per-datum Gaussians from means (N, L) and covariance matrices (N, L, L): their
        diagonal (``covariance="diag"``) or their inverse (``"full"``)."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device)
        if covariance == "full":
            precision = np.linalg.inv(covariance_matrices)
            precision = 0.5 * (precision + precision.transpose(0, 2, 1))
            return cls(mean_t, precision=torch.as_tensor(precision, dtype=torch.float32, device=device))
        variances = np.diagonal(covariance_matrices, axis1=1, axis2=2).copy()
        return cls(mean_t, var=torch.as_tensor(variances, dtype=torch.float32, device=device))

    @property
    def is_mixture(self):
        return self.log_weights is not None

    def to(self, device):
        """This prior on ``device`` (itself when it is there already): a message sent from another
        rank's device arrives on that device."""
        if self.mean.device == torch.device(device):
            return self
        move = lambda tensor: None if tensor is None else tensor.to(device)  # noqa: E731
        return PriorMessage(move(self.mean), var=move(self.var), precision=move(self.precision),
                            log_weights=move(self.log_weights))

    def to_numpy(self):
        """{"mean", "var" or "precision", and "log_weights" for the mixture} as NumPy arrays
        (what a run directory saves)."""
        arrays = {"mean": self.mean}
        arrays.update({"var": self.var} if self.var is not None else {"precision": self.precision})
        if self.log_weights is not None:
            arrays["log_weights"] = self.log_weights
        return {key: value.detach().cpu().numpy() for key, value in arrays.items()}

    @classmethod
    def from_numpy(cls, arrays, device):
        return cls(**{key: torch.as_tensor(value, dtype=torch.float32, device=device) for key, value in arrays.items()})

    def block(self, start, stop):
        """The marginal prior of latent dimensions ``start:stop`` (one modality's part of a prior
        over concatenated latents): its means and variances, or the inverse of its covariance's
        block with a full precision. The whole range returns ``self``."""
        if start == 0 and stop == self.mean.shape[1]:
            return self
        if self.precision is None:
            return PriorMessage(self.mean[:, start:stop], var=self.var[:, start:stop], log_weights=self.log_weights)
        covariance = torch.linalg.inv(self.precision.double())[:, start:stop, start:stop]
        precision = torch.linalg.inv(covariance)
        precision = 0.5 * (precision + precision.transpose(1, 2))
        return PriorMessage(self.mean[:, start:stop], precision=precision.to(self.mean.dtype),
                            log_weights=self.log_weights)

    def batch(self, indices):
        """The per-datum prior of the data at ``indices``: (mean, var, precision), one of the
        last two None."""
        if self.is_mixture:
            raise ValueError("A mixture prior is shared by every datum; use kl() instead of batch().")
        return (
            self.mean[indices],
            None if self.var is None else self.var[indices],
            None if self.precision is None else self.precision[indices],
        )

    def kl(self, mean, logvar, indices):
        """The KL term of the data at ``indices`` whose posteriors are N(mean, diag e^logvar): (B,)."""
        if self.is_mixture:
            return kl_to_mixture_prior(mean, logvar, self.log_weights, self.mean, self.var, self.precision)
        prior_mean, prior_var, prior_precision = self.batch(indices)
        if prior_precision is not None:
            return kl_to_full_prior(mean, logvar, prior_mean, prior_precision)
        return kl_to_diagonal_prior(mean, logvar, prior_mean, prior_var)


class SweepAverager:
    """GibbsGMM callback that averages, over the sweeps from ``first`` on, each datum's
    first and second moments under its assigned cluster: E[mu_z] and E[Sigma_z + mu_z mu_z^T]."""

    def __init__(self, first):
        self.first = first
        self.count = 0
        self.first_moment = self.second_moment = None

    def __call__(self, sweep, labels, gmm):
        if sweep < self.first:
            return
        means, covariances = gmm.means_, gmm.covariances_
        second = covariances + np.einsum("ki,kj->kij", means, means)
        if self.first_moment is None:
            self.first_moment = np.zeros((len(labels), means.shape[1]))
            self.second_moment = np.zeros((len(labels), means.shape[1], means.shape[1]))
        self.first_moment += means[labels]
        self.second_moment += second[labels]
        self.count += 1

    def moments(self):
        """Per-datum mean (N, L) and covariance (N, L, L) of the averaged prior."""
        mean = self.first_moment / self.count
        covariance = self.second_moment / self.count - np.einsum("ni,nj->nij", mean, mean)
        return mean, 0.5 * (covariance + covariance.transpose(0, 2, 1))


def mixture_moments(resp, means, covariances):
    """Mean (N, L) and covariance (N, L, L) of each datum's mixture sum_k r_nk N(means_k, covariances_k),
    from weights ``resp`` (N, K) (rows summing to 1), ``means`` (K, L) and ``covariances`` (K, L, L)."""
    mean = resp @ means
    offsets = means[None, :, :] - mean[:, None, :]  # (N, K, L)
    covariance = np.einsum("nk,kij->nij", resp, covariances) + np.einsum("nk,nki,nkj->nij", resp, offsets, offsets)
    return mean, 0.5 * (covariance + covariance.transpose(0, 2, 1))


def responsibility_moments(gmm, latents):
    """Mean (N, L) and covariance (N, L, L) of each datum's mixture sum_k r_nk N(mu_k, Sigma_k),
    r_nk = p(z_n = k | x_n) under the GMM's parameters."""
    return mixture_moments(gmm.predict_proba(latents), gmm.means_, gmm.covariances_)


def prior_message(prior_from, covariance, gmm, latents, device, averager=None):
    """The GMM's message to the next round's VAE.

    Parameters
    ----------
    prior_from : {"responsibilities", "last", "average", "mixture"}
    covariance : {"diag", "full"}
        Send each Gaussian's diagonal covariance or its full precision.
    gmm : fitted GibbsGMM
    latents : ndarray of shape (n_samples, latent_dim), what the GMM was fitted to
    averager : SweepAverager of the chain, needed by "average" only
    """
    if prior_from == "mixture":
        return PriorMessage.mixture(gmm, covariance, device)
    if prior_from == "last":
        return PriorMessage.from_gmm(gmm, gmm.labels_, covariance, device)
    if prior_from == "average":
        mean, covariances = averager.moments()
    elif prior_from == "responsibilities":
        mean, covariances = responsibility_moments(gmm, latents)
    else:
        raise ValueError(f"prior_from must be responsibilities, last, average or mixture, got {prior_from!r}.")
    return PriorMessage.from_moments(mean, covariances, covariance, device)
