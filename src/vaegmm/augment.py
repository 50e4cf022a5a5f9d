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

__all__ = ["random_affine", "affine_views"]


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

    def uniform(*shape):  # uniform in [-1, 1]
        return torch.rand(shape, generator=generator, device=images.device, dtype=images.dtype) * 2 - 1

    angle = uniform(batch) * math.radians(rotation)
    zoom = 1 + uniform(batch) * scale
    offset = uniform(batch, 2) * shift
    return affine_views(images, image_shape, angle, zoom, offset)


def affine_views(images, image_shape, angle, zoom, offset):
    """Each image rotated by ``angle`` radians about its centre (from the column axis towards
    the row axis: clockwise as displayed with row 0 at the top), zoomed by ``zoom`` (> 1
    enlarges) and shifted by ``offset`` = (right, down) as fractions of its width and height.

    Parameters
    ----------
    images : Tensor of shape (B, H * W)
    image_shape : (H, W)
    angle, zoom : Tensor of shape (B,)
    offset : Tensor of shape (B, 2)

    Returns
    -------
    views : Tensor of shape (B, H * W); pixels that come from outside the image are 0
    """
    batch = images.shape[0]
    height, width = image_shape
    # theta maps each output pixel's normalised coordinates (in [-1, 1]) to where it is read from
    # in the input: the inverse of "zoom and rotate about the centre, then shift".
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    shift = -2 * offset  # normalised coordinates span 2 per image side
    theta = torch.stack([
        torch.stack([cos, sin, cos * shift[:, 0] + sin * shift[:, 1]], dim=1),
        torch.stack([-sin, cos, -sin * shift[:, 0] + cos * shift[:, 1]], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, (batch, 1, height, width), align_corners=False)
    views = F.grid_sample(images.reshape(batch, 1, height, width), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    return views.reshape(batch, height * width)
