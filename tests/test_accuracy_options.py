"""The options of the accuracy study: random affine views, the mixture message,
the denoising target, round 0's own epochs, the EM start of the chain, the suite's data."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from vaegmm.augment import affine_views, random_affine
from vaegmm.config import ConfigError, TrainConfig
from vaegmm.data import IMBALANCED_COUNTS, load_dataset
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import clustering_metrics
from vaegmm.messages import PriorMessage
from vaegmm.mutual import fit_mutual
from vaegmm.vae import fit_vae
from vaegmm.vae import VAE, kl_to_components, kl_to_diagonal_prior, kl_to_full_prior, kl_to_mixture_prior


# --- random affine views ------------------------------------------------------------------------
def _image(rng, shape=(6, 6)):
    return torch.as_tensor(rng.random(shape), dtype=torch.float32)


def test_affine_views_rotate_and_shift_like_numpy():
    image = _image(np.random.default_rng(0))
    flat = image.reshape(1, -1)
    one = torch.ones(1)
    quarter = affine_views(flat, (6, 6), torch.tensor([math.pi / 2]), one, torch.zeros(1, 2)).reshape(6, 6)
    np.testing.assert_allclose(quarter.numpy(), np.rot90(image.numpy(), k=-1), atol=1e-5)  # clockwise
    right_down = affine_views(flat, (6, 6), torch.zeros(1), one, torch.tensor([[1 / 6, 2 / 6]])).reshape(6, 6)
    expected = np.zeros((6, 6), dtype=np.float32)
    expected[2:, 1:] = image.numpy()[:-2, :-1]  # one column right, two rows down, zeros come in
    np.testing.assert_allclose(right_down.numpy(), expected, atol=1e-5)


def test_affine_views_zoom_about_the_centre():
    image = torch.zeros(8, 8)
    image[3:5, 3:5] = 1.0  # a 2x2 square at the centre
    view = affine_views(image.reshape(1, -1), (8, 8), torch.zeros(1), torch.tensor([2.0]), torch.zeros(1, 2))
    view = view.reshape(8, 8)
    assert view[2:6, 2:6].min() > 0.2 and float(view.sum()) == pytest.approx(4 * float(image.sum()), rel=0.3)  # twice as wide
    assert view[0].sum() == 0 and view[:, 0].sum() == 0


def test_random_affine_is_identity_without_ranges_and_reproducible_with_a_generator():
    images = torch.rand(5, 64)
    assert random_affine(images, (8, 8)) is images
    draw = lambda: random_affine(images, (8, 8), rotation=15, shift=0.1, scale=0.1,  # noqa: E731
                                 generator=torch.Generator().manual_seed(3))
    first, second = draw(), draw()
    torch.testing.assert_close(first, second)
    assert first.shape == images.shape and not torch.equal(first, images)
    assert 0 <= float(first.min()) and float(first.max()) <= 1


# --- the mixture message ------------------------------------------------------------------------
def _posterior(rng, batch=4, latent=3):
    mean = torch.as_tensor(rng.normal(size=(batch, latent)), dtype=torch.float64)
    logvar = torch.as_tensor(rng.normal(scale=0.3, size=(batch, latent)) - 1, dtype=torch.float64)
    return mean, logvar


def _mixture(rng, k=3, latent=3):
    means = torch.as_tensor(rng.normal(scale=2, size=(k, latent)), dtype=torch.float64)
    var = torch.as_tensor(rng.uniform(0.3, 2, size=(k, latent)), dtype=torch.float64)
    a = rng.normal(size=(k, latent, latent))
    precision = torch.as_tensor(a @ a.transpose(0, 2, 1) + latent * np.eye(latent), dtype=torch.float64)
    weights = rng.dirichlet(np.ones(k))
    return torch.as_tensor(np.log(weights)), means, var, precision


def test_kl_to_components_matches_the_single_gaussian_kls():
    rng = np.random.default_rng(0)
    mean, logvar = _posterior(rng)
    _, means, var, precision = _mixture(rng)
    diag = kl_to_components(mean, logvar, means, var=var)
    full = kl_to_components(mean, logvar, means, precision=precision)
    for k in range(3):
        torch.testing.assert_close(diag[:, k], kl_to_diagonal_prior(mean, logvar, means[k], var[k]))
        torch.testing.assert_close(full[:, k], kl_to_full_prior(mean, logvar, means[k].expand_as(mean),
                                                                 precision[k].expand(4, 3, 3)))
    with pytest.raises(ValueError, match="exactly one"):
        kl_to_components(mean, logvar, means)


def test_mixture_kl_is_the_optimum_over_cluster_posteriors_and_bounds_the_true_kl():
    rng = np.random.default_rng(1)
    mean, logvar = _posterior(rng)
    log_weights, means, var, _ = _mixture(rng)
    value = kl_to_mixture_prior(mean, logvar, log_weights, means, var=var)
    components = kl_to_components(mean, logvar, means, var=var)

    def objective(gamma):  # sum_k gamma_k KL_k + KL(gamma || pi)
        return (gamma * components).sum(1) + (gamma * (torch.log(gamma) - log_weights)).sum(1)

    optimum = torch.softmax(log_weights - components, dim=1)
    torch.testing.assert_close(value, objective(optimum))
    for _ in range(5):
        gamma = torch.as_tensor(rng.dirichlet(np.ones(3), size=4))
        assert torch.all(objective(gamma) >= value - 1e-12)
    # An upper bound of KL(q || sum_k pi_k N_k), estimated by Monte Carlo with scipy's densities.
    std = torch.exp(0.5 * logvar).numpy()
    for n in range(4):
        x = mean[n].numpy() + std[n] * rng.normal(size=(20000, 3))
        log_q = multivariate_normal(mean[n].numpy(), np.diag(std[n] ** 2)).logpdf(x)
        log_p = np.logaddexp.reduce([np.log(np.exp(log_weights[k].item()))
                                     + multivariate_normal(means[k].numpy(), np.diag(var[k].numpy())).logpdf(x)
                                     for k in range(3)], axis=0)
        assert np.mean(log_q - log_p) <= value[n].item() + 0.05
    # One component: the single-Gaussian KL.
    torch.testing.assert_close(kl_to_mixture_prior(mean, logvar, torch.zeros(1), means[:1], var=var[:1]),
                               kl_to_diagonal_prior(mean, logvar, means[0], var[0]))


def test_mixture_message_from_a_gmm_round_trips_and_refuses_batch():
    rng = np.random.default_rng(2)
    weights, means = np.array([0.2, 0.8]), rng.normal(size=(2, 3))
    covariances = np.stack([np.diag([1.0, 2.0, 0.5]), np.eye(3) * 0.3])
    gmm = GibbsGMM.from_parameters(means, np.linalg.inv(covariances), weights)
    message = PriorMessage.mixture(gmm, "diag", "cpu")
    np.testing.assert_allclose(message.var.numpy(), [[1, 2, 0.5], [0.3, 0.3, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(message.log_weights.numpy(), np.log(weights), rtol=1e-6)
    again = PriorMessage.from_numpy(message.to_numpy(), "cpu")
    assert again.is_mixture
    mean, logvar = _posterior(rng, latent=3)
    mean, logvar = mean.float(), logvar.float()
    torch.testing.assert_close(again.kl(mean, logvar, torch.arange(4)), message.kl(mean, logvar, torch.arange(4)))
    full = PriorMessage.mixture(gmm, "full", "cpu")
    torch.testing.assert_close(full.kl(mean, logvar, torch.arange(4)), message.kl(mean, logvar, torch.arange(4)),
                               rtol=1e-4, atol=1e-4)  # diagonal covariances: the same KL
    with pytest.raises(ValueError, match="shared by every datum"):
        message.batch(torch.arange(2))


# --- the VAE step with views ----------------------------------------------------------------------
def test_clean_target_reconstructs_the_image_not_the_view():
    torch.manual_seed(0)
    images = torch.rand(64, 16).round()
    blank = lambda batch, generator=None: torch.zeros_like(batch)  # noqa: E731  a view that carries nothing
    outputs = {}
    for target in ("view", "clean"):
        vae = VAE(16, 2, (16,))
        optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
        fit_vae(vae, optimizer, images, PriorMessage.standard_normal(64, 2, "cpu"), epochs=60, batch_size=64,
                augment=blank, reconstruct=target, progress=False)
        with torch.no_grad():
            outputs[target] = torch.sigmoid(vae.decode(torch.zeros(1, 2))).mean().item()
    assert outputs["view"] < 0.1  # it learnt to draw the blank views
    assert outputs["clean"] == pytest.approx(images.mean().item(), abs=0.1)  # the images' mean


TINY = dict(data="digits", manifold="none", max_samples=200, vae_epochs=2, gmm_sweeps=3, latent_dim=3, n_clusters=4,
            batch_size=64, hidden_dims=(16,), device="cpu")


def test_a_run_with_views_mixture_message_and_em_start_is_reproducible(tmp_path):
    torch.set_num_threads(1)
    config = TrainConfig(**TINY, round0_epochs=3, prior_from="mixture", vae_init="warm", augment_rotation=10.0,
                         augment_shift=0.1, augment_scale=0.1, augment_target="clean", gmm_init="em")
    dataset = load_dataset("digits", max_samples=200)
    first = fit_mutual(dataset, config, run_dir=tmp_path / "a", progress=False, log=None)
    second = fit_mutual(dataset, config, progress=False, log=None)
    assert len(first.rounds[0].elbo) == 3 and len(first.rounds[1].elbo) == 2
    np.testing.assert_array_equal(first.rounds[1].latents, second.rounds[1].latents)
    assert np.load(tmp_path / "a" / "iteration_0" / "prior.npz")["log_weights"].shape == (4,)
    # Resume after a death at any write: tests/test_resume.py covers these options too.


def test_em_start_begins_in_the_separated_mode():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 60)
    X = rng.normal(size=(240, 2)) * 0.2 + 5 * np.array([[0, 0], [1, 0], [0, 1], [1, 1]])[labels]
    first = {}
    GibbsGMM(4, n_sweeps=1, init="em", random_state=0,
             callback=lambda sweep, z, model: first.setdefault("z", z.copy()), n_chains=1).fit(X)
    assert clustering_metrics(labels, first["z"])["ari"] == pytest.approx(1.0)
    a = GibbsGMM(4, n_sweeps=3, init="em", random_state=5, n_chains=1).fit(X)
    b = GibbsGMM(4, n_sweeps=3, init="em", random_state=5, n_chains=1).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)


# --- configuration and data --------------------------------------------------------------------
def test_new_options_are_validated_and_old_configs_load_without_them(tmp_path):
    with pytest.raises(ConfigError, match="augment_rotation must be a number in"):
        TrainConfig(augment_rotation=-1)
    with pytest.raises(ConfigError, match="augment_shift"):
        TrainConfig(augment_shift=1.5)
    with pytest.raises(ConfigError, match="round0_epochs must be a positive integer"):
        TrainConfig(round0_epochs=0)
    with pytest.raises(ConfigError, match="augment_target must be one of view, clean"):
        TrainConfig(augment_target="both")
    values = {**TrainConfig().to_dict(), "vae_epochs": 200}  # (a config of that time held it as a number)
    for key in ("augment_rotation", "augment_shift", "augment_scale", "augment_target", "round0_epochs"):
        del values[key]
    import json
    (tmp_path / "config.json").write_text(json.dumps(values))
    old = TrainConfig.from_json(tmp_path / "config.json")
    assert (old.augment_rotation, old.augment_shift, old.augment_scale, old.augment_target) == (0, 0, 0, "view")
    assert old.first_round_epochs == old.vae_epochs == 200 and not old.augments  # round 0 as long as every round
    assert TrainConfig(vae_epochs=5, manifold="none").first_round_epochs == 3
    assert TrainConfig(manifold="none").first_round_epochs == 100


def test_suite_data_halves_and_imbalanced_subsets():
    full = load_dataset("mnist5k")
    a, b = load_dataset("mnist5k-a"), load_dataset("mnist5k-b")
    assert len(a) == len(b) == 2500
    np.testing.assert_array_equal(np.concatenate([a.images, b.images]).sum(), full.images.sum())
    assert not any(np.array_equal(a.images[0], image) for image in b.images[:500])
    counts = [np.bincount(load_dataset("mnist5k-imbalanced", seed=s).labels) for s in (0, 1)]
    low, high = IMBALANCED_COUNTS
    assert all(low <= c.min() and c.max() <= high for c in counts)
    assert not np.array_equal(counts[0], counts[1])  # the proportions are drawn per seed
    np.testing.assert_array_equal(load_dataset("mnist5k-imbalanced", seed=1).labels,
                                  load_dataset("mnist5k-imbalanced", seed=1).labels)


def test_prior_weight_sets_the_kl_weight_of_the_rounds_with_the_gmm_prior(monkeypatch):
    config = TrainConfig(kl_weight=0.5, prior_weight=3.0)
    assert [config.round_kl_weight(i) for i in range(3)] == [0.5, 3.0, 3.0]
    assert TrainConfig(kl_weight=2.0).round_kl_weight(1) == 2.0
    with pytest.raises(ConfigError, match="prior_weight must be a non-negative finite number"):
        TrainConfig(prior_weight=-1.0)
    import vaegmm.modules as modules

    used = []
    original = modules.fit_vae
    monkeypatch.setattr(modules, "fit_vae", lambda *a, **k: used.append(k["kl_weight"]) or original(*a, **k))
    fit_mutual(load_dataset("digits", max_samples=200), TrainConfig(**TINY, kl_weight=0.5, prior_weight=3.0),
               progress=False, log=None)
    assert used == [0.5, 3.0]


def test_data_scaled_prior_follows_the_latents_scale():
    from vaegmm.modules import gauss_wishart_prior

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 80)
    X = (rng.normal(size=(320, 2)) * 0.3 + 4 * np.array([[0, 0], [1, 0], [0, 1], [1, 1]])[labels]) * 0.01
    config = TrainConfig(n_clusters=4, latent_dim=2, gmm_prior="data")
    prior = gauss_wishart_prior(config, X)
    np.testing.assert_allclose(prior["mean_prior"], X.mean(axis=0))
    expected = np.cov(X, rowvar=False) / 4 ** (2 / 2)  # E[Lambda^-1] ~ Cov / K^(2/L) = nu W ^-1 / nu
    np.testing.assert_allclose(np.linalg.inv(2 * prior["wishart_scale"]), expected, rtol=1e-4)
    scaled = gauss_wishart_prior(config, 10 * X)
    np.testing.assert_allclose(scaled["wishart_scale"], prior["wishart_scale"] / 100, rtol=1e-6)
    assert gauss_wishart_prior(config.replace(gmm_prior="fixed"), X) == {"prior": "fixed", "mean_prior": None,
                                                                          "wishart_scale": 0.55}
    # Clusters at 1/100 of the fixed prior's scale, chains started at the truth (EM): the fixed prior merges
    # them, the scaled one keeps them.
    fits = {name: GibbsGMM(4, n_sweeps=30, init="em", random_state=1,
                           **gauss_wishart_prior(config.replace(gmm_prior=name), X), n_chains=1).fit(X)
            for name in ("fixed", "data")}
    assert clustering_metrics(labels, fits["data"].labels_)["ari"] > 0.95
    assert clustering_metrics(labels, fits["fixed"].labels_)["ari"] < 0.5


# --- the contrastive loss of two views --------------------------------------------------------
def test_contrastive_loss_matches_the_nt_xent_formula():
    from vaegmm.vae import contrastive_loss

    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    rows = np.concatenate([first, second])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    similarity = rows @ rows.T / 0.3
    losses = []
    for i in range(8):
        partner = (i + 4) % 8
        others = [j for j in range(8) if j != i]
        losses.append(-similarity[i, partner] + np.log(np.sum(np.exp(similarity[i, others]))))
    got = contrastive_loss(torch.as_tensor(first), torch.as_tensor(second), 0.3)
    assert float(got) == pytest.approx(np.mean(losses), rel=1e-10)
    same = torch.as_tensor(rng.normal(size=(4, 3)) * np.array([[10.0], [0.0], [0.0], [0.0]]) + np.eye(4, 3) * 5)
    assert float(contrastive_loss(same, same, 0.1)) < float(contrastive_loss(same, same.flip(0), 0.1))


def test_contrast_pulls_the_views_of_an_image_together():
    from vaegmm.vae import encode

    torch.manual_seed(0)
    images = torch.rand(64, 16).round()
    noise = lambda batch, generator=None: (batch + 0.3 * torch.randn(batch.shape, generator=generator)).clamp(0, 1)  # noqa: E731
    matched, similarity = {}, {}
    for weight in (0.0, 20.0):
        torch.manual_seed(1)
        vae = VAE(16, 4, (32,))
        fit_vae(vae, torch.optim.Adam(vae.parameters(), lr=1e-2), images, PriorMessage.standard_normal(64, 4, "cpu"),
                epochs=80, batch_size=64, augment=noise, reconstruct="clean", contrast_weight=weight,
                contrast_temperature=0.5, generator=torch.Generator().manual_seed(0),
                noise_generator=torch.Generator().manual_seed(0), progress=False)
        first, second = (encode(vae, noise(images, torch.Generator().manual_seed(s))) for s in range(2))
        first /= np.linalg.norm(first, axis=1, keepdims=True)
        second /= np.linalg.norm(second, axis=1, keepdims=True)
        cosine = first @ second.T  # (view of image i, view of image j)
        similarity[weight] = np.mean(np.diag(cosine))
        matched[weight] = np.mean(np.argmax(cosine, axis=1) == np.arange(64))  # a view finds its image's other view
    assert similarity[20.0] > similarity[0.0] + 0.05
    assert matched[20.0] > matched[0.0] + 0.1


def test_contrast_is_validated():
    with pytest.raises(ConfigError, match="contrast_weight must be a non-negative number"):
        TrainConfig(contrast_weight=-1)
    with pytest.raises(ConfigError, match="contrast_temperature must be a positive number"):
        TrainConfig(contrast_temperature=0)
    with pytest.raises(ConfigError, match="needs random views"):
        TrainConfig(contrast_weight=1.0, augment_rotation=0, augment_shift=0, augment_scale=0)
