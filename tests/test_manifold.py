"""The manifold module (``--manifold umap``, vaegmm.manifold): VAE -> UMAP -> GMM, and the
message back in the latent space.

The backward message and the config are tested without UMAP. Everything that runs UMAP shares
the module-scoped runs below (UMAP's first call in a process JIT-compiles for tens of seconds):
two identical tiny CLI runs (digits, 200 images, 2 rounds, 2 epochs, 3 sweeps).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from vaegmm.cli import main
from vaegmm.config import ConfigError, TrainConfig
from vaegmm.data import load_dataset
from vaegmm.gmm import GibbsGMM
from vaegmm.manifold import ManifoldModule, latent_cluster_moments, manifold_seed
from vaegmm.mutual import fit_mutual
from vaegmm.rundir import RunDirectory

CPU = torch.device("cpu")
TIMING_KEYS = {"seconds", "vae_seconds", "gmm_seconds"}
TRAIN_ARGS = ["train", "--data", "digits", "--max-samples", "200", "--mutual-iterations", "2", "--vae-iter", "2",
              "--gmm-iter", "3", "--manifold", "umap", "--quiet", "--seed", "0"]


def _metrics(run_dir):
    rows = json.loads((run_dir / "metrics.json").read_text())["iterations"]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


# -- the backward message, without UMAP ---------------------------------------------------------
@pytest.fixture(scope="module")
def clustered():
    """A GMM fitted to a 2-d 'embedding' of 3 groups, and 4-d 'latents' of the same points."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    labels = np.repeat(np.arange(3), 40)
    embedding = centres[labels] + rng.normal(size=(120, 2))
    latents = np.column_stack([embedding, rng.normal(size=(120, 2))]) @ rng.normal(size=(4, 4)) + 1.5
    gmm = GibbsGMM(3, n_sweeps=5, random_state=0).fit(embedding)
    return gmm, embedding, latents


def _direct_moments(weights, latents):
    """Per cluster: weighted mean and covariance of the latents, by a loop."""
    means, covariances = [], []
    for k in range(weights.shape[1]):
        w = weights[:, k]
        mean = (w[:, None] * latents).sum(0) / w.sum()
        offsets = latents - mean
        means.append(mean)
        covariances.append((w[:, None, None] * offsets[:, :, None] * offsets[:, None, :]).sum(0) / w.sum())
    return np.array(means), np.array(covariances)


def _direct_prior(weights, means, covariances):
    """Per datum: mean and covariance of sum_k w_nk N(means_k, covariances_k), by a loop."""
    prior_means, prior_covariances = [], []
    for w in weights:
        mean = w @ means
        covariance = sum(w[k] * (covariances[k] + np.outer(means[k] - mean, means[k] - mean))
                         for k in range(len(w)))
        prior_means.append(mean)
        prior_covariances.append(covariance)
    return np.array(prior_means), np.array(prior_covariances)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_backward_message_is_the_responsibility_weighted_latent_moments(clustered, covariance):
    gmm, embedding, latents = clustered
    config = TrainConfig(manifold="umap", prior_from="responsibilities", prior_covariance=covariance, latent_dim=4)
    module = ManifoldModule(config, CPU)
    message = module.backward(gmm, embedding, latents)
    resp = gmm.predict_proba(embedding)
    means, covariances = _direct_moments(resp, latents)
    ridge = 1e-6 * np.mean(np.var(latents, axis=0))
    np.testing.assert_allclose(module.clusters["mu"], means, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(module.clusters["covariance"], covariances + ridge * np.eye(4), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(module.clusters["pi"], resp.mean(0), rtol=1e-12)
    prior_mean, prior_covariance = _direct_prior(resp, means, covariances + ridge * np.eye(4))
    np.testing.assert_allclose(message.mean.numpy(), prior_mean, rtol=1e-5, atol=1e-5)
    if covariance == "full":
        np.testing.assert_allclose(np.linalg.inv(message.precision.numpy().astype(np.float64)), prior_covariance,
                                   rtol=1e-3, atol=1e-4)
    else:
        np.testing.assert_allclose(message.var.numpy(), np.diagonal(prior_covariance, axis1=1, axis2=2), rtol=1e-5)
    # The message lives in the latent space (L = 4), not in the embedding's (d = 2).
    assert message.mean.shape == (len(latents), 4)


def test_backward_message_with_prior_from_last_is_each_datums_cluster_of_latents(clustered):
    gmm, embedding, latents = clustered
    module = ManifoldModule(TrainConfig(manifold="umap", prior_from="last", latent_dim=4), CPU)
    message = module.backward(gmm, embedding, latents)
    ridge = 1e-6 * np.mean(np.var(latents, axis=0))
    for k in np.unique(gmm.labels_):
        members = latents[gmm.labels_ == k]
        rows = np.flatnonzero(gmm.labels_ == k)
        np.testing.assert_allclose(message.mean.numpy()[rows], np.tile(members.mean(0), (len(rows), 1)), rtol=1e-5)
        np.testing.assert_allclose(message.var.numpy()[rows], np.tile(members.var(0) + ridge, (len(rows), 1)),
                                   rtol=1e-5)


def test_an_empty_cluster_stays_a_proper_gaussian():
    rng = np.random.default_rng(1)
    latents = rng.normal(size=(50, 3))
    weights = np.eye(3)[rng.integers(2, size=50)]  # cluster 2 empty
    pi, means, covariances = latent_cluster_moments(weights, latents)
    assert pi[2] == 0 and np.all(np.isfinite(means)) and np.all(np.isfinite(covariances))
    np.testing.assert_allclose(means[2], latents.mean(0))
    assert np.all(np.linalg.eigvalsh(covariances) > 0)


def test_manifold_seed_is_fixed_by_the_round_and_apart_from_the_chains():
    seed = np.random.SeedSequence(0).spawn(2)[1]
    first = manifold_seed(seed)
    seed.spawn(3)  # the GMM's chains spawn from the same SeedSequence
    assert manifold_seed(seed) == first and 0 <= first < 2 ** 31
    assert manifold_seed(np.random.SeedSequence(0).spawn(2)[0]) != first


# -- config and bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("prior_from", ["average", "mixture"])
def test_config_refuses_the_priors_the_manifold_cannot_send(prior_from):
    for manifold in ("umap", None):  # given, or the default
        with pytest.raises(ConfigError, match=rf"prior_from = {prior_from} is not supported with manifold = umap "
                                              r"\(the default\); use prior_from responsibilities or last, or manifold none"):
            TrainConfig(manifold=manifold, prior_from=prior_from)
    TrainConfig(manifold="none", prior_from=prior_from)  # without the manifold they stay


@pytest.mark.parametrize("changes, field", [
    ({"manifold": "tsne"}, "manifold"), ({"manifold_dim": 0}, "manifold_dim"),
    ({"manifold_neighbors": 1}, "manifold_neighbors"), ({"manifold_min_dist": 1.5}, "manifold_min_dist"),
    ({"manifold": "umap", "wishart_dof": 9}, "wishart_dof"),  # the GMM clusters manifold_dim = 10 dimensions
])
def test_config_validates_the_manifold_fields(changes, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**changes)


def test_the_prior_and_the_vae_start_follow_the_manifold_unless_given():
    plain, manifold = TrainConfig(manifold="none"), TrainConfig(manifold="umap")
    default = TrainConfig()  # the default manifold is umap where it runs, none where it does not
    assert default.manifold is None and default.manifold_used == "umap"
    assert (default.gmm_prior_used, default.vae_init_used, default.first_round_epochs) == ("data-axis", "warm", 200)
    assert default.without_default_manifold() == plain and manifold.without_default_manifold() == manifold
    assert (plain.gmm_prior_used, plain.vae_init_used) == ("data", "retrain")
    assert (manifold.gmm_prior_used, manifold.vae_init_used) == ("data-axis", "warm")
    # The same 300 epochs: 100 + 200 retrained without it; 200 + 100 fine-tuned with it.
    assert (plain.first_round_epochs, plain.round_epochs, plain.total_epochs) == (100, 200, 300)
    assert (manifold.first_round_epochs, manifold.round_epochs, manifold.total_epochs) == (200, 100, 300)
    assert TrainConfig(manifold="umap", vae_epochs=5).first_round_epochs == 10
    assert TrainConfig(manifold="umap", round0_epochs=7).first_round_epochs == 7
    # As the CLI builds a config (the defaults, then the flags given): they still follow.
    assert TrainConfig().replace(manifold="none").vae_init_used == "retrain"
    given = TrainConfig(manifold="umap", gmm_prior="data", vae_init="retrain")
    assert (given.gmm_prior_used, given.vae_init_used) == ("data", "retrain")
    with pytest.raises(ConfigError, match="vae_init must be one of retrain, warm"):
        TrainConfig(vae_init="cold")


def test_old_config_json_without_the_key_loads_as_no_manifold(tmp_path):
    values = TrainConfig().to_dict()
    for key in ("manifold", "manifold_dim", "manifold_neighbors", "manifold_min_dist"):
        values.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert TrainConfig.from_json(tmp_path / "config.json").manifold == "none"


def test_missing_umap_names_the_install_command_in_one_sentence(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now fails
    module = ManifoldModule(TrainConfig(manifold="umap"), CPU)
    with pytest.raises(ValueError, match=r"pip install umap-learn") as error:
        module.forward(np.zeros((30, 3)), 0)
    assert str(error.value).count(". ") == 0 and "manifold none" in str(error.value)
    # The CLI says it before training anything.
    assert main(TRAIN_ARGS + ["--out", str(tmp_path / "run"), "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install umap-learn" in err[0] and "--manifold" in err[0]
    assert not (tmp_path / "run" / "iteration_0").exists()


def test_too_few_images_for_the_manifold_say_so():
    config = TrainConfig(data="digits", max_samples=20, manifold="umap", n_clusters=3, latent_dim=3)
    with pytest.raises(ValueError, match="manifold_neighbors = 20"):
        fit_mutual(load_dataset("digits", max_samples=20), config, progress=False, log=None)


# -- runs with UMAP ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two `vaegmm train --manifold umap` runs with the same seed (the first with figures)."""
    root = tmp_path_factory.mktemp("manifold")
    assert main(TRAIN_ARGS + ["--out", str(root / "a")]) == 0
    assert main(TRAIN_ARGS + ["--out", str(root / "b"), "--no-figures"]) == 0
    return root / "a", root / "b"


def test_train_writes_the_embedding_and_the_fitted_umap(runs):
    run = RunDirectory(runs[0])
    config = run.load_config()
    assert config.manifold == "umap" and config.manifold_dim == 10
    for iteration in (0, 1):
        folder = run.round_path(iteration)
        for name in ("embedding.npy", "manifold.pkl", "latent_clusters.npz", "prior.npz"):
            assert (folder / name).is_file(), name
        embedding, latents = run.load_array(iteration, "embedding"), run.load_array(iteration, "latents")
        assert embedding.shape == (200, 10) and embedding.dtype == np.float64
        assert latents.shape == (200, config.latent_dim)  # latents stay the VAE's
        assert run.load_gmm(iteration).means_.shape == (10, 10)  # the GMM clusters the embedding
        assert run.load_prior(iteration)["mean"].shape == (200, config.latent_dim)  # the message is in latent space
        model = run.load_manifold(iteration)
        assert (model.n_components, model.n_neighbors, model.min_dist) == (10, 20, 0.0)
        assert run.load_latent_gmm(iteration).means_.shape == (10, config.latent_dim)


def test_the_same_seed_gives_the_same_run(runs):
    a, b = runs
    assert _metrics(a) == _metrics(b)
    for iteration in (0, 1):
        for name in ("embedding", "latents", "assignments"):
            np.testing.assert_array_equal(RunDirectory(a).load_array(iteration, name),
                                          RunDirectory(b).load_array(iteration, name))


def test_figure_of_the_embedding_is_written_and_captioned(runs):
    from vaegmm.report import collect_figures

    assert (runs[0] / "figures" / "manifold_embedding.png").is_file()
    figures, left_out = collect_figures(runs[0])
    titles = {figure.path.name: figure for figure in figures}
    assert "UMAP" in titles["manifold_embedding.png"].title and not left_out
    assert "latent_clusters.npz" in titles["clusters_iteration1.png"].caption


def test_predict_transforms_new_images_with_the_fitted_umap(runs, tmp_path, monkeypatch):
    import umap

    from vaegmm.evaluate import predict
    from vaegmm.vae import encode

    digits = load_dataset("digits")
    np.savez(tmp_path / "new.npz", x=digits.images[-100:], y=digits.labels[-100:])
    calls = []
    transform = umap.UMAP.transform

    def spy(self, X, *args, **kwargs):
        calls.append(len(X))
        return transform(self, X, *args, **kwargs)

    def refit(*args, **kwargs):
        raise AssertionError("predict must not fit UMAP again")

    monkeypatch.setattr(umap.UMAP, "transform", spy)
    monkeypatch.setattr(umap.UMAP, "fit", refit)
    monkeypatch.setattr(umap.UMAP, "fit_transform", refit)
    prediction = predict(runs[0], str(tmp_path / "new.npz"))
    assert calls == [100]
    run = RunDirectory(runs[0])
    vae, _ = run.load_vae(1)
    with torch.no_grad():
        latents = encode(vae, torch.as_tensor(digits.flat()[-100:]))
    expected = run.load_gmm(1).predict_proba(transform(run.load_manifold(1), latents.astype(np.float32)))
    np.testing.assert_allclose(prediction["probabilities"], expected, rtol=1e-6, atol=1e-9)
    assert prediction["probabilities"].shape == (100, 10) and prediction["metrics"]["ari"] is not None


def test_resume_of_a_manifold_run_ends_as_the_uninterrupted_one(runs, tmp_path):
    config = RunDirectory(runs[1]).load_config()
    dataset = load_dataset("digits", max_samples=200, seed=config.seed)
    polls = []

    def stop_in_round_1():  # polled after every epoch and between steps; round 0 saved: its end, before round 1's
        polls.append(RunDirectory(tmp_path).iterations())  # VAE, after round 1's first epoch (the stop)
        return polls.count([0]) >= 3

    with pytest.raises(KeyboardInterrupt):
        fit_mutual(dataset, config, run_dir=tmp_path, progress=False, log=None, stop_requested=stop_in_round_1)
    assert RunDirectory(tmp_path).iterations() == [0]
    resumed = fit_mutual(dataset, config, run_dir=tmp_path, progress=False, log=None, resume=True)
    assert resumed.rounds[0].embedding is not None  # round 0 loaded from the run directory, embedding included
    assert _metrics(tmp_path) == _metrics(runs[1])
    np.testing.assert_array_equal(RunDirectory(tmp_path).load_array(1, "embedding"),
                                  RunDirectory(runs[1]).load_array(1, "embedding"))


def test_evaluate_reads_out_the_embedding(monkeypatch):
    import vaegmm.evaluate as evaluate_module

    seen = []
    readout = evaluate_module.readout_metrics

    def spy(points, *args, **kwargs):
        seen.append(points.shape[1])
        return readout(points, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "readout_metrics", spy)
    config = TrainConfig(data="digits", max_samples=200, mutual_iterations=2, vae_epochs=2, gmm_sweeps=3,
                         manifold="umap", manifold_dim=4, device="cpu")
    evaluation = evaluate_module.evaluate(config, seeds=(0,), progress=False)
    assert seen == [4, 4, 4]  # round 0, round 1 (mutual) and apart: each the embedding (d = 4), not latents (L = 12)
    assert evaluation["per_seed"][0]["readout"]["apart"]["accuracy"] > 0.2


def test_naming_game_clusters_each_agents_embedding(tmp_path):
    args = ["naming-game", "--data", "digits", "--max-samples", "200", "--mutual-iterations", "2", "--vae-iter", "2",
            "--gmm-iter", "3", "--manifold", "umap", "--manifold-dim", "4", "--quiet", "--no-figures",
            "--out", str(tmp_path)]
    assert main(args) == 0
    for agent in ("agent_a", "agent_b"):
        run = RunDirectory(tmp_path / agent)
        assert run.load_array(1, "embedding").shape == (200, 4)
        assert run.load_gmm(1).means_.shape[1] == 4
        assert run.load_prior(1)["mean"].shape == (200, 12)
        assert (run.round_path(1) / "manifold.pkl").is_file()
    game = json.loads((tmp_path / "metrics.json").read_text())
    assert len(game["iterations"]) == 2 and 0 <= game["iterations"][-1]["acceptance"] <= 1
