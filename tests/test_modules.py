"""The module seam: the loop of VAEModule and GMMModule gives, bit for bit, what the
hard-wired loop of vaegmm 0.x gave (``reference_loop.py``: the loop before the seam, frozen), and
the library leaves the caller's global RNG alone."""

import numpy as np
import pytest
import torch

import reference_loop
from test_resume import _assert_same_rounds
from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.messages import PriorMessage
from vaegmm.modules import GMMModule, VAEModule
from vaegmm.mutual import fit_mutual


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", max_samples=240, seed=0)


def _config(**overrides):
    base = dict(data="digits", vae_epochs=4, round0_epochs=3, gmm_sweeps=6, mutual_iterations=3, latent_dim=4,
                hidden_dims=(32,), batch_size=64, n_clusters=6, gmm_init="kmeans++", seed=3)
    return TrainConfig(**{**base, **overrides})


def _assert_identical(new, old):
    _assert_same_rounds(new, old)
    for a, b in zip(new.rounds, old.rounds):
        assert {k: v for k, v in a.metrics.items() if "seconds" not in k} == {
            k: v for k, v in b.metrics.items() if "seconds" not in k}
    for (name, p), (_, q) in zip(new.vae.state_dict().items(), old.vae.state_dict().items()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("options", [
    {},
    {"prior_from": "last", "vae_init": "warm", "chain_init": "previous"},
    {"prior_from": "average", "prior_sweeps": 3, "gmm_chains": 2, "prior_covariance": "full"},
    {"prior_from": "mixture", "augment_rotation": 10.0, "augment_shift": 0.1, "gmm_prior": "data", "send": "sample",
     "gmm_init": "em", "augment_target": "clean"},
], ids=["defaults", "last-warm-previous", "average-chains-full", "mixture-views-dataprior-sample"])
def test_module_loop_reproduces_the_loop_before_the_seam_bit_for_bit(digits, tmp_path, options):
    config = _config(**options)
    new = fit_mutual(digits, config, run_dir=tmp_path / "new", progress=False, log=None)
    old = reference_loop.fit_mutual(digits, config, run_dir=tmp_path / "old", progress=False, log=None)
    _assert_identical(new, old)


def test_fit_mutual_leaves_the_global_torch_rng_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_mutual(digits, _config(mutual_iterations=1), progress=False, log=None)
    assert torch.equal(torch.rand(3), expected)


def test_the_modules_compose_by_hand_like_the_loop(digits):
    """The two modules and their messages are enough to write the loop (what a new module plugs into)."""
    config = _config(mutual_iterations=2)
    images = torch.as_tensor(digits.flat())
    vae = VAEModule(config, images.shape[1], digits.image_shape, torch.device("cpu"))
    gmm = GMMModule(config, None, torch.device("cpu"))
    prior = PriorMessage.standard_normal(len(images), config.latent_dim, "cpu")
    seeds = np.random.SeedSequence(0).spawn(2)
    for iteration, seed in enumerate(seeds):
        vae.start_round(iteration, int(seed.generate_state(1)[0]))
        vae.fit(images, prior, progress=False)
        latents = vae.encode(images)
        assert latents.shape == (len(images), config.latent_dim)
        prior = gmm.fit(latents, seed, progress=False).message()
        assert prior.mean.shape == (len(images), config.latent_dim) and torch.isfinite(prior.var).all()
    assert len(vae.elbo) == config.vae_epochs and vae.epoch == config.vae_epochs
    assert gmm.gmm.labels_.shape == (len(images),)
