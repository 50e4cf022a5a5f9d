"""Random affine views of images (rotation, shift, scale), in torch only.

The VAE may train on a fresh random view of each image in every epoch while the GMM clusters
the latents of the clean images (see ``TrainConfig.augment_*``). Each view keeps its datum's
index, so it is trained against its datum's prior: the GMM's message then tells the encoder
that all views of one datum belong to the same cluster.

Uses ``torch.nn.functional.affine_grid`` / ``grid_sample`` (bilinear, zeros outside the
image), so it runs on whatever device the images are on; no torchvision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_affine"]


def random_affine(images, image_shape, *, rotation=0.0, shift=0.0, scale=0.0, generator=None):
    """One random affine view of every image.

    Parameters
    ----------
    images : Tensor of shape (B, H * W), pixels in [0, 1]
    image_shape : (H, W)
    rotation : float
        Largest rotation in degrees; each view's angle is uniform in [-rotation, rotation].
    shift : float
        Largest shift as a fraction of the image's height and width (each axis uniform in
        [-shift, shift]).
    scale : float
        Largest relative change of size; each view's zoom is uniform in [1 - scale, 1 + scale].
    generator : torch.Generator on the images' device, default=None

    Returns
    -------
    views : Tensor of shape (B, H * W), the same images when all three ranges are 0
    """
    if rotation == 0 and shift == 0 and scale == 0:
        return images
    batch = images.shape[0]
    height, width = image_shape

    def uniform(*shape):  # uniform in [-1, 1]
        return torch.rand(shape, generator=generator, device=images.device, dtype=images.dtype) * 2 - 1

    angle = uniform(batch) * math.radians(rotation)
    zoom = 1 + uniform(batch) * scale
    offset = uniform(batch, 2) * (2 * shift)  # grid coordinates span [-1, 1]: a shift of s is 2 s
    # theta maps output coordinates to input coordinates: the inverse of "rotate, then zoom".
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], dim=1),
                         torch.stack([sin, cos, offset[:, 1]], dim=1)], dim=1)
    grid = F.affine_grid(theta, (batch, 1, height, width), align_corners=False)
    views = F.grid_sample(images.reshape(batch, 1, height, width), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    return views.reshape(batch, height * width)
