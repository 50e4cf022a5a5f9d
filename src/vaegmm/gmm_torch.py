"""The per-datum half of a Gibbs sweep in torch, for ``GibbsGMM(device=...)`` (CUDA, or CPU).

A sweep of :class:`vaegmm.gmm.GibbsGMM` has two parts: O(N K L^2) work on the data (the log
density of every datum under every cluster, one categorical draw per datum, the clusters'
sufficient statistics) and O(K L^3) algebra on the cluster parameters (the Gauss-Wishart
posterior, Wishart and Normal draws). The second stays in NumPy float64 whatever the device
(K small matrices: microseconds); this module does the first in torch on any device, with the
same formulas as the NumPy kernels of :mod:`vaegmm.gibbs`:

- the data are held as their monomials of degree <= 2, shape (P, N) with
  P = L (L + 1) / 2 + L + 1 (:func:`vaegmm.gibbs.quadratic_features`), so the log densities are
  one (K, P) @ (P, N) product with the coefficients of :func:`vaegmm.gibbs.log_gaussian_coefficients`,
  and the counts, sums and scatter matrices one (P, N) @ (N, K) product with the one-hot labels;
- z is drawn by inverse CDF: one uniform per datum from a ``torch.Generator`` on the device,
  counted against the cumulative sums of the unnormalised responsibilities.

Everything is float64, as in NumPy. Per sweep, only the K x P coefficients go to the device
and the P x K moments and the N labels come back. On CPU, torch uses
``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import numpy as np
import torch

from .gibbs import log_gaussian_coefficients, quadratic_features, statistics_from_moments

__all__ = ["TorchSweepData"]


class TorchSweepData:
    """The data of a Gibbs chain on a torch device, and the two per-datum steps of a sweep.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), the (centred) data.
    n_components : int
    device : str or torch.device
    seed : int
        Seed of the ``torch.Generator`` (on ``device``) that draws the uniforms for z.
    """

    def __init__(self, X, n_components, device, *, seed):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("GibbsGMM(device='cuda') was asked for but CUDA is not available; use device=None.")
        self.n_samples, self.n_features = X.shape
        self.n_components = n_components
        self.features = torch.as_tensor(quadratic_features(X), device=self.device)  # (P, N), float64
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._labels = self._labels_host = None  # the last draw, on the device and in NumPy

    def sample_labels(self, means, precisions_chol, log_weights, rng=None):
        """Draw z; return labels of shape (N,) (NumPy int64) and log p(X | parameters) (a float).

        ``rng`` is not used: the uniforms come from this object's torch generator.
        """
        coefficients = torch.as_tensor(
            log_gaussian_coefficients(means, precisions_chol, log_weights), dtype=torch.float64, device=self.device
        )  # (K, P)
        labels, log_norm = sample_categorical_columns(coefficients @ self.features, self.generator)
        self._labels, self._labels_host = labels, labels.cpu().numpy()
        return self._labels_host, float(log_norm.sum())

    def sufficient_statistics(self, labels):
        """counts (K,), sums (K, L), outer_sums (K, L, L), NumPy float64, of the data labelled
        ``labels`` (shape (N,)); the last draw's labels are not copied back to the device."""
        if labels is self._labels_host:
            labels = self._labels
        else:
            labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=self.device)
        one_hot = torch.nn.functional.one_hot(labels, self.n_components).to(torch.float64)  # (N, K)
        return statistics_from_moments((self.features @ one_hot).cpu().numpy(), self.n_features)  # (P, K)


def sample_categorical_columns(weighted, generator):
    """Torch twin of :func:`vaegmm.gibbs.sample_categorical_columns`; ``weighted`` is overwritten.

    Parameters
    ----------
    weighted : Tensor of shape (n_components, n_samples), unnormalised log probabilities
    generator : torch.Generator on the tensor's device

    Returns
    -------
    labels : Tensor of shape (n_samples,), int64
    log_norm : Tensor of shape (n_samples,), log sum_k exp(weighted[k, n])
    """
    n_components, n_samples = weighted.shape
    column_max = weighted.max(dim=0).values  # (N,)
    weighted.sub_(column_max).exp_()
    cdf = torch.cumsum(weighted, dim=0)  # (K, N)
    total = cdf[-1]
    uniform = torch.rand(n_samples, generator=generator, dtype=weighted.dtype, device=weighted.device) * total
    labels = (cdf < uniform).sum(dim=0).clamp_(max=n_components - 1)
    return labels, total.log() + column_max
