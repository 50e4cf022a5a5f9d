"""The module seam: the loop of VAEModule and GMMModule gives, bit for bit, what the
hard-wired loop of vaegmm 0.x gave (``reference_loop.py``: the loop before the seam, frozen), and
the library leaves the caller's global RNG alone."""

import functools
import json

import numpy as np
import pytest
import torch

import frozen_mutual
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
                hidden_dims=(32,), batch_size=64, n_clusters=6, gmm_init="kmeans++", seed=3,
                manifold="none")  # (the loop before the seam had no manifold; the engine's test below has it)
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


@pytest.mark.parametrize("options", [
    {"gmm_init": "em", "manifold": None},  # today's defaults: the UMAP manifold, the most probable of four chains
    {"n_clusters": "auto", "max_clusters": 8, "gmm_chains": 2, "vae_init": "warm", "chain_init": "previous"},
    {"manifold": "umap", "manifold_dim": 3, "manifold_neighbors": 10, "gmm_prior": "data-axis", "gmm_chains": 2},
], ids=["defaults", "auto-k-warm-previous", "manifold"])
def test_the_engine_wiring_reproduces_the_loop_before_the_engine_bit_for_bit(digits, tmp_path, options):
    config = _config(mutual_iterations=2, **options)
    new = fit_mutual(digits, config, run_dir=tmp_path / "new", progress=False, log=None)
    old = frozen_mutual.fit_mutual(digits, config, run_dir=tmp_path / "old", progress=False, log=None)
    _assert_identical(new, old)
    for round_new, round_old in zip(new.rounds, old.rounds):
        if round_old.embedding is not None:
            np.testing.assert_array_equal(round_new.embedding, round_old.embedding)
    for name in ("iteration_1/prior.npz", "iteration_1/gmm.npz"):
        with np.load(tmp_path / "new" / name) as a, np.load(tmp_path / "old" / name) as b:
            assert sorted(a) == sorted(b) and all(np.array_equal(a[key], b[key]) for key in a), name
    for name in ("iteration_0/history.json", "iteration_1/history.json"):
        assert json.loads((tmp_path / "new" / name).read_text()) == json.loads((tmp_path / "old" / name).read_text())
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(json.loads((tmp_path / "new" / "metrics.json").read_text())["iterations"]) == \
        strip(json.loads((tmp_path / "old" / "metrics.json").read_text())["iterations"])


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
    assert len(vae.elbo) == config.round_epochs and vae.epoch == config.vae_epochs
    assert gmm.gmm.labels_.shape == (len(images),)


def test_encode_views_average_the_clean_latents_with_those_of_random_views():
    """encode(views=k) is the mean of the encoder means of the images and of k views, drawn in turn."""
    from vaegmm.augment import random_affine
    from vaegmm.vae import VAE, encode

    torch.manual_seed(0)
    vae = VAE(64, 3, (16,)).eval()
    images = torch.rand(10, 64)
    augment = functools.partial(random_affine, image_shape=(8, 8), rotation=15, shift=0.1, scale=0.1)
    got = encode(vae, images, views=3, augment=augment, view_generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        means = [vae.encode(images)[0]] + [vae.encode(augment(images, generator=generator))[0] for _ in range(3)]
    np.testing.assert_allclose(got, torch.stack(means).double().mean(0).numpy(), rtol=1e-12, atol=1e-12)
    assert not np.allclose(got, encode(vae, images))  # the views move the latents


def test_encode_views_change_the_latents_sent_but_not_the_training(digits):
    """Round 0's VAE trains the same epochs on the same draws with or without encode_views; only the
    latents it sends differ (the views have their own generator), reproducibly from the seed."""
    plain = fit_mutual(digits, _config(mutual_iterations=1), progress=False, log=None)
    views = fit_mutual(digits, _config(mutual_iterations=1, encode_views=4), progress=False, log=None)
    again = fit_mutual(digits, _config(mutual_iterations=1, encode_views=4), progress=False, log=None)
    assert plain.rounds[0].elbo == views.rounds[0].elbo
    assert not np.allclose(plain.rounds[0].latents, views.rounds[0].latents)
    np.testing.assert_array_equal(views.rounds[0].latents, again.rounds[0].latents)


@pytest.mark.parametrize("changes, message", [({"encode_views": -1}, "non-negative integer"),
                                              ({"encode_views": 2, "augment_rotation": 0.0, "augment_shift": 0.0,
                                                "augment_scale": 0.0}, "needs random views")])
def test_encode_views_refuses_what_it_cannot_use(changes, message):
    from vaegmm.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        _config(**changes)


def test_a_prior_message_moves_to_the_receivers_device():
    prior = PriorMessage(torch.zeros(3, 2), precision=torch.eye(2).repeat(3, 1, 1))
    assert prior.to("cpu") is prior  # already there: the same message, no copy
    moved = prior.to("meta")  # a device of its own, on any machine
    assert moved.mean.device.type == moved.precision.device.type == "meta" and moved.var is None
    assert moved.mean.shape == (3, 2) and moved.precision.shape == (3, 2, 2)
