"""Variational autoencoder with a per-datum Gaussian prior on its latent.

The encoder q_phi(x | o) = N(m_phi(o), diag(exp(logvar_phi(o)))) and the Bernoulli decoder
p_theta(o | x) follow Kingma & Welling (2014), Appendix C; the KL term is against a Gaussian
prior that may differ per datum (the GMM's message), in closed form (Appendix B generalised to
a non-standard prior; full-covariance case: the Gaussian KL of e.g. Murphy, PML1 §6.2.3).

The VAE knows nothing of the GMM: it receives prior means and (co)variances per datum.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["VAE", "kl_to_diagonal_prior", "kl_to_full_prior", "kl_to_components", "kl_to_mixture_prior",
           "negative_elbo_terms", "contrastive_loss", "fit_vae", "encode"]

# Bounds on the encoder's log-variance keep exp(logvar) and the KL finite (variance in
# [e^-12, e^8] ~ [6e-6, 3e3]); latents of a trained VAE live far inside this range.
LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0
LIKELIHOODS = ("bernoulli", "gaussian")
LOG_SCALE_MIN, LOG_SCALE_MAX = -5.0, 5.0  # the Gaussian decoder's log standard deviation, kept finite
HALF_LOG_TWO_PI = 0.5 * float(np.log(2 * np.pi))
ENCODE_BATCH = 4096  # images encoded at once by encode()


class VAE(nn.Module):
    """VAE with an MLP or a convolutional encoder/decoder and a Bernoulli (images in [0, 1]) or
    Gaussian (real feature vectors) decoder.

    ``"mlp"``: encoder ``input_dim -> hidden_dims -> 2 * latent_dim``, decoder mirrored.
    ``"conv"``: encoder of two 4x4 stride-2 convolutions (``conv_channels``), then
    ``hidden_dims``, then ``2 * latent_dim``; the decoder mirrors it with transposed
    convolutions. Images are padded to a multiple of 4 pixels and the logits cropped back.

    Parameters
    ----------
    input_dim : int, default=784
        Number of pixels per image.
    latent_dim : int, default=12
    hidden_dims : tuple of int, default=(256,)
        Widths of the fully connected hidden layers of the encoder; the decoder uses them reversed.
    architecture : {"mlp", "conv"}, default="mlp"
    image_shape : (height, width), default=None
        Needed by "conv"; ``height * width`` must equal ``input_dim``.
    conv_channels : tuple of two ints, default=(16, 32)
        Channels of the two convolutions ("conv" only).
    likelihood : {"bernoulli", "gaussian"}, default="bernoulli"
        p(o | x): Bernoulli with the decoder's logits (pixels in [0, 1]), or Gaussian with the
        decoder's output as mean and a learned standard deviation per input dimension
        (``log_scale``; for standardised feature vectors).
    """

    def __init__(self, input_dim=784, latent_dim=12, hidden_dims=(256,), architecture="mlp", image_shape=None,
                 conv_channels=(16, 32), likelihood="bernoulli"):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}.")
        self.likelihood = likelihood
        self.input_dim = int(input_dim)
        self.latent_dim = int(latent_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.architecture = architecture
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.conv_channels = tuple(int(c) for c in conv_channels)
        if architecture == "mlp":
            widths = (self.input_dim, *self.hidden_dims)
            self.encoder = _mlp(widths)
            decoder_widths = (self.latent_dim, *reversed(self.hidden_dims))
            self.decoder = nn.Sequential(_mlp(decoder_widths), nn.Linear(decoder_widths[-1], self.input_dim))
        elif architecture == "conv":
            if self.image_shape is None or self.image_shape[0] * self.image_shape[1] != self.input_dim:
                raise ValueError(f"architecture='conv' needs the image_shape (height, width) of the "
                                 f"{self.input_dim}-pixel images, got {image_shape!r}.")
            height, width = self.image_shape
            self._padded = (-(-height // 4) * 4, -(-width // 4) * 4)
            c1, c2 = self.conv_channels
            self._grid = (c2, self._padded[0] // 4, self._padded[1] // 4)
            flat = c2 * self._grid[1] * self._grid[2]
            widths = (flat, *self.hidden_dims)
            self.encoder = nn.Sequential(
                _Unflatten(self.image_shape, self._padded),
                nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(), _mlp(widths),
            )
            decoder_widths = (self.latent_dim, *reversed(self.hidden_dims), flat)
            self.decoder = nn.Sequential(
                _mlp(decoder_widths), nn.Unflatten(1, self._grid),
                nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),
                _Crop(self.image_shape),
            )
        else:
            raise ValueError(f"architecture must be 'mlp' or 'conv', got {architecture!r}.")
        self.to_mean = nn.Linear(widths[-1], self.latent_dim)
        self.to_logvar = nn.Linear(widths[-1], self.latent_dim)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(self.input_dim))

    def config(self):
        """Constructor arguments, enough to rebuild this architecture."""
        config = {"input_dim": self.input_dim, "latent_dim": self.latent_dim, "hidden_dims": list(self.hidden_dims)}
        if self.architecture != "mlp":
            config.update(architecture=self.architecture, image_shape=list(self.image_shape),
                          conv_channels=list(self.conv_channels))
        if self.likelihood != "bernoulli":
            config["likelihood"] = self.likelihood
        return config

    def reconstruction_loss(self, output, target):
        """-log p(target | x) per datum, summed over input dimensions: (B,). ``output`` is what
        :meth:`decode` returned."""
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(output, target, reduction="none").sum(dim=-1)
        log_scale = self.log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        error = (target - output) * torch.exp(-log_scale)
        return (0.5 * error.square() + log_scale + HALF_LOG_TWO_PI).sum(dim=-1)

    def mean(self, output):
        """E[o | x] from :meth:`decode`'s output: the pixels' probabilities, or the Gaussian mean."""
        return torch.sigmoid(output) if self.likelihood == "bernoulli" else output

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
        """(B, L) -> Bernoulli logits, or Gaussian means, (B, input_dim)."""
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


class _Unflatten(nn.Module):
    """(B, H * W) -> (B, 1, H', W'), zero-padded at the bottom and right to (H', W')."""

    def __init__(self, shape, padded):
        super().__init__()
        self.shape, self.padded = shape, padded

    def forward(self, flat):
        images = flat.reshape(flat.shape[0], 1, *self.shape)
        return F.pad(images, (0, self.padded[1] - self.shape[1], 0, self.padded[0] - self.shape[0]))


class _Crop(nn.Module):
    """(B, 1, H', W') -> (B, H * W): the top-left H x W pixels, flattened."""

    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, images):
        return images[:, 0, : self.shape[0], : self.shape[1]].reshape(images.shape[0], -1)


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


def kl_to_components(mean, logvar, means, var=None, precision=None):
    """KL(q_n || N(means_k, Sigma_k)) for every datum n and every component k.

    Parameters
    ----------
    mean, logvar : Tensor of shape (B, L), the diagonal Gaussians q_n
    means : Tensor of shape (K, L)
    var : Tensor of shape (K, L), diagonal covariances; or
    precision : Tensor of shape (K, L, L), full precision matrices (exactly one of the two)

    Returns
    -------
    kl : Tensor of shape (B, K)
    """
    if (var is None) == (precision is None):
        raise ValueError("Give exactly one of var and precision.")
    if var is not None:  # the single-Gaussian KL, broadcast over (B, K)
        return kl_to_diagonal_prior(mean[:, None, :], logvar[:, None, :], means[None], var[None])
    diff = mean[:, None, :] - means[None, :, :]  # (B, K, L)
    trace = torch.exp(logvar) @ torch.diagonal(precision, dim1=-2, dim2=-1).T  # (B, K)
    mahalanobis = torch.einsum("bki,kij,bkj->bk", diff, precision, diff)
    chol = torch.linalg.cholesky(precision)
    log_det = 2.0 * torch.sum(torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)), dim=-1)  # (K,)
    return 0.5 * (trace + mahalanobis - mean.shape[-1] - log_det[None] - torch.sum(logvar, dim=-1, keepdim=True))


def kl_to_mixture_prior(mean, logvar, log_weights, means, var=None, precision=None):
    """The mixture prior's KL term: ``-log sum_k pi_k exp(-KL(q_n || N(mu_k, Sigma_k)))`` per datum.

    This is ``min_gamma sum_k gamma_k KL(q_n || N_k) + KL(gamma || pi)`` (VaDE's closed form,
    Jiang et al. 2017, with the cluster posterior gamma_n at its optimum
    ``gamma_nk ∝ pi_k exp(-KL(q_n || N_k))``), an upper bound of KL(q_n || sum_k pi_k N_k): the
    ELBO with a cluster variable c_n under q(c_n | o_n) = gamma_n. Its gradient is
    ``sum_k gamma_nk grad KL(q_n || N_k)``: each datum is pulled towards the clusters that its
    current latent is responsible to. One component (K = 1) gives the single-Gaussian KL.

    Parameters
    ----------
    mean, logvar : Tensor of shape (B, L)
    log_weights : Tensor of shape (K,), log pi (pi sums to 1)
    means, var, precision : as in :func:`kl_to_components`

    Returns
    -------
    kl : Tensor of shape (B,)
    """
    return -torch.logsumexp(log_weights[None, :] - kl_to_components(mean, logvar, means, var, precision), dim=-1)


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
    reconstruction : Tensor of shape (B,), -log p(o | x) summed over pixels
    kl : Tensor of shape (B,)
    """
    logits, mean, logvar = vae(images, generator)
    reconstruction = vae.reconstruction_loss(logits, images)
    if (prior_var is None) == (prior_precision is None):
        raise ValueError("Give exactly one of prior_var and prior_precision.")
    if prior_precision is not None:
        kl = kl_to_full_prior(mean, logvar, prior_mean, prior_precision)
    else:
        kl = kl_to_diagonal_prior(mean, logvar, prior_mean, prior_var)
    return reconstruction, kl


def fit_vae(vae, optimizer, images, prior, *, epochs, batch_size, kl_weight=1.0, shuffle=True,
            generator=None, noise_generator=None, augment=None, reconstruct="view", start_epoch=0, on_epoch_end=None,
            progress=True, desc="VAE", distributed=None, reseed=None, contrast_weight=0.0, contrast_temperature=0.5):
    """Train ``vae`` for epochs ``start_epoch + 1 .. epochs`` against a per-datum prior.

    Parameters
    ----------
    images : Tensor of shape (n_samples, input_dim) on the VAE's device
    prior : :class:`vaegmm.messages.PriorMessage` (or anything with its ``kl(mean, logvar,
        indices)``): per datum (n_samples rows), or the shared mixture
    generator : torch.Generator (CPU) for shuffling; noise_generator (on the images' device) for
        the reparameterisation and the augmentation
    augment : callable, default=None
        ``augment(batch, generator=noise_generator)`` returns a random view of every image of
        the batch (e.g. :func:`vaegmm.augment.random_affine`); its KL is to the view's datum's
        prior. None: the images themselves.
    reconstruct : {"view", "clean"}, default="view"
        With ``augment``, what the decoder reconstructs from a view's latent: the view itself,
        or the clean image (a denoising VAE, Im et al. 2017, with the random view as the
        corruption: the latent learns what is common to all views of an image).
    start_epoch : int, default=0
        Epochs already done (when resuming).
    on_epoch_end : callable, default=None
        Called as ``on_epoch_end(epoch, elbo, loss)`` after each epoch (``epoch`` counts the
        epochs done), only once the epoch's loss is known to be finite.
    contrast_weight : float, default=0
        With ``augment``, above 0: two random views of every image per step, the VAE's loss the
        mean of theirs, plus this weight times :func:`contrastive_loss` of their encoder means.
    contrast_temperature : float, default=0.5
    distributed : vaegmm.distributed.Context, default=None
        With an active context, ``images`` are this rank's shard of the data (rows
        ``context.shard(n_samples)`` of the ``n_samples`` rows of ``prior``'s data), the VAE is wrapped
        in :class:`~torch.nn.parallel.DistributedDataParallel` and every step trains each rank
        on ``ceil(batch_size / world_size)`` data of its shard (the prior indexed by their
        global indices), so that one step sees ``batch_size`` data in all, as in one process.
        The ELBO and loss are means over all the data.
    reseed : callable, default=None
        Called as ``reseed(epoch)`` before each epoch (e.g. to seed the generators per rank and
        epoch, so that a resumed distributed run draws what an uninterrupted one would).

    Returns
    -------
    elbo, loss : lists with one per-datum mean per epoch trained here

    Raises
    ------
    FloatingPointError
        If an epoch's loss is NaN or infinite (before ``on_epoch_end`` sees it).
    """
    from .distributed import SINGLE

    context = distributed or SINGLE
    views = 2 if contrast_weight > 0 and augment is not None else 1  # two views of each datum per step
    n_local = images.shape[0]
    model, offset, n_samples, batches = vae, 0, n_local, None
    if context.active:  # this rank's shard; every rank takes the same number of steps per epoch
        n_samples = _data_size(prior, context, n_local)
        offset = context.shard(n_samples)[0]
        local_batch = -(-batch_size // context.world_size)  # batch_size is the batch of all ranks together
        batches = -(-(-(-n_samples // context.world_size)) // local_batch)  # steps: the largest shard's
        if context.world_size > 1:
            model = torch.nn.parallel.DistributedDataParallel(vae, gradient_as_bucket_view=True)
    elbo_per_epoch, loss_per_epoch = [], []
    bar = tqdm(range(start_epoch, epochs), desc=desc, unit="epoch", disable=not progress, leave=False,
               initial=start_epoch, total=epochs)
    vae.train()
    for epoch in bar:
        if reseed is not None:
            reseed(epoch)
        order = torch.randperm(n_local, generator=generator) if shuffle else torch.arange(n_local)
        order = order.to(images.device)
        elbo_sum = loss_sum = 0.0
        for rows in (order.split(batch_size) if batches is None else order.tensor_split(batches)):
            weight = 1.0
            if rows.numel() == 0:  # a shard one datum short: a step without loss, so that DDP's steps match
                rows, weight = order[:1], 0.0
            indices = rows + offset
            batch = target = images[rows]
            if views == 2:  # both views in one forward pass
                batch, target, indices = batch.repeat(2, 1), target.repeat(2, 1), indices.repeat(2)
            if augment is not None:  # a random view of each datum, trained against its datum's prior
                batch = augment(batch, generator=noise_generator)
                target = target if reconstruct == "clean" else batch
            logits, mean, logvar = model(batch, noise_generator)
            reconstruction = vae.reconstruction_loss(logits, target)
            kl = prior.kl(mean, logvar, indices)  # each datum's own prior, or the shared mixture
            # Both terms summed over pixels/latent dims, averaged over the batch: one scale.
            loss = (reconstruction + kl_weight * kl).mean()
            if views == 2:
                reconstruction, kl = (0.5 * (term[:len(rows)] + term[len(rows):]) for term in (reconstruction, kl))
                loss = loss + contrast_weight * contrastive_loss(*mean.chunk(2), contrast_temperature)
            loss = weight * loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                elbo_sum -= weight * float((reconstruction + kl).sum())
                loss_sum += float(loss) * rows.numel()
        if context.active:  # means over all the data
            elbo_sum, loss_sum = map(float, context.all_reduce_sum(np.array([elbo_sum, loss_sum])))
        if not (np.isfinite(elbo_sum) and np.isfinite(loss_sum)):
            raise FloatingPointError(
                f"{desc}: the VAE loss became NaN or infinite in epoch {epoch + 1}; lower the learning "
                "rate (lr) or check the data. The last checkpoint is kept."
            )
        elbo_per_epoch.append(elbo_sum / n_samples)
        loss_per_epoch.append(loss_sum / n_samples)
        bar.set_postfix(elbo=f"{elbo_per_epoch[-1]:.2f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, elbo_per_epoch[-1], loss_per_epoch[-1])
    return elbo_per_epoch, loss_per_epoch


def contrastive_loss(first, second, temperature=0.5):
    """NT-Xent (SimCLR, Chen et al. 2020) of paired rows: each row of ``first`` should be closer in
    cosine similarity to its row of ``second`` than to any other row of either, and vice versa.

    Parameters
    ----------
    first, second : Tensor of shape (B, L), e.g. the encoder means of two views of B images
    temperature : float

    Returns
    -------
    loss : scalar Tensor, the mean over the 2B rows of -log softmax of the pair's similarity
    """
    rows = F.normalize(torch.cat([first, second]), dim=1)
    similarity = rows @ rows.T / temperature
    similarity.fill_diagonal_(float("-inf"))  # a row is not its own pair
    n = first.shape[0]
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(rows.device)
    return F.cross_entropy(similarity, partner)


def _data_size(prior, context, n_local):
    """All the data's size in a distributed fit: the per-datum prior's rows, or (the shared
    mixture) the sum of the shards."""
    if not getattr(prior, "is_mixture", False):
        return prior.mean.shape[0]
    return int(context.all_reduce_sum(np.array([float(n_local)]))[0])


@torch.no_grad()
def encode(vae, images, *, sample=False, generator=None, views=0, augment=None, view_generator=None):
    """Latents of every image, in order: encoder means, or reparameterised samples.

    Parameters
    ----------
    images : Tensor of shape (n_samples, input_dim)
    views : int, default=0
        Average the latents of the images with those of this many random views of them
        (``augment(batch, generator=view_generator)``, e.g. :func:`vaegmm.augment.random_affine`
        with the training views' ranges): test-time augmentation.

    Returns
    -------
    latents : ndarray of shape (n_samples, latent_dim), float64
    """
    vae.eval()
    chunks = []
    for batch in images.split(ENCODE_BATCH):
        latents = 0.0
        for view in range(views + 1):
            mean, logvar = vae.encode(batch if view == 0 else augment(batch, generator=view_generator))
            latents = latents + (vae.reparameterize(mean, logvar, generator) if sample else mean).double()
        chunks.append(latents / (views + 1))
    return torch.cat(chunks).cpu().numpy()
