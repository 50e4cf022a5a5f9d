"""The GMM finds K itself: a sparse overfitted mixture (n_components="auto")."""

import json

import numpy as np
import pytest

from vaegmm.cli import main
from vaegmm.config import ConfigError, TrainConfig
from vaegmm.gmm import GibbsGMM
from vaegmm.metrics import many_to_one_accuracy


def _separated_blobs(n_clusters, n_features, seed, per_cluster=100, separation=8.0):
    """Unit-variance Gaussian clusters whose centres lie at least ``separation`` apart."""
    rng = np.random.default_rng(seed)
    half_width = 15.0 * n_clusters ** (1.0 / n_features)
    centres = []
    while len(centres) < n_clusters:
        centre = rng.uniform(-half_width, half_width, size=n_features)
        if all(np.linalg.norm(centre - other) >= separation for other in centres):
            centres.append(centre)
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    return np.array(centres)[labels] + rng.normal(size=(len(labels), n_features)), labels


def _data_prior(X, max_components):
    """The prior of gmm_prior="data" (vaegmm.modules.gauss_wishart_prior) for the bound K_max, with
    a weakly informative prior on the means (beta = 0.1: their prior spread is sqrt(10) times a
    cluster's; with beta = 1, 15 clusters in 2-D merged two true clusters in 5 of 10 seeds)."""
    n_features = X.shape[1]
    covariance = np.cov(X, rowvar=False) / max_components ** (2.0 / n_features)
    return {"mean_prior": X.mean(axis=0), "wishart_scale": np.linalg.inv(n_features * covariance), "beta": 0.1}


@pytest.mark.parametrize("n_features", [2, 12])
@pytest.mark.parametrize("n_clusters", [3, 7, 15])
def test_posterior_mode_of_k_is_exact_in_nine_of_ten_seeds(n_clusters, n_features):
    exact = 0
    for seed in range(10):
        X, _ = _separated_blobs(n_clusters, n_features, seed)
        gmm = GibbsGMM("auto", max_components=30, n_sweeps=300, random_state=seed, **_data_prior(X, 30), n_chains=1).fit(X)
        exact += gmm.n_clusters_found_ == n_clusters
    assert exact >= 9


def test_auto_attributes_and_the_sparse_default_concentration():
    X, labels = _separated_blobs(4, 3, seed=0)
    gmm = GibbsGMM("auto", max_components=12, n_sweeps=60, random_state=0, **_data_prior(X, 12), n_chains=1).fit(X)
    assert gmm.n_components_ == 12 and gmm.means_.shape == (12, 3) and gmm._alpha_value() == pytest.approx(0.01 / 12)
    assert gmm.clusters_found_.shape == (60,) and gmm.clusters_found_[0] <= 12
    assert sum(gmm.clusters_found_posterior_.values()) == pytest.approx(1.0)
    assert gmm.n_clusters_found_ == max(gmm.clusters_found_posterior_, key=gmm.clusters_found_posterior_.get)
    assert gmm.n_clusters_found_ == len(np.unique(gmm.labels_)) == 4
    assert gmm.predict_proba(X).shape == (len(X), 12)  # emptied clusters stay (weight ~ 0), ready to be refilled
    fixed = GibbsGMM(4, n_sweeps=5, random_state=0, n_chains=1).fit(X)
    assert fixed._alpha_value() == 0.3 and fixed.n_components_ == 4
    with pytest.raises(ValueError, match="n_components must be a positive integer or 'auto'"):
        GibbsGMM("many", n_chains=1).fit(X)


def test_many_to_one_accuracy_reads_each_cluster_as_its_majority_class():
    truth = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    clusters = np.array([5, 5, 6, 6, 6, 7, 7, 8])  # cluster 6 holds one 0 and two 1s
    assert many_to_one_accuracy(truth, clusters) == pytest.approx(7 / 8)
    assert many_to_one_accuracy(truth, np.arange(8)) == 1.0  # one cluster per datum: 1, hence never alone


def test_config_and_cli_take_auto(tmp_path, capsys):
    assert TrainConfig(n_clusters="auto").cluster_slots == 30 and TrainConfig().cluster_slots == 10
    with pytest.raises(ConfigError, match="n_clusters must be a positive integer or auto"):
        TrainConfig(n_clusters="some")
    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--max-samples", "300", "--clusters", "auto", "--max-clusters", "12",
            "--gmm-prior", "data", "--vae-iter", "2", "--round0-epochs", "2", "--gmm-iter", "6", "--latent-dim", "4",
            "--hidden-dims", "32", "--quiet", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    assert "K found" in capsys.readouterr().out
    rounds = json.loads((out / "metrics.json").read_text())["iterations"]
    for row in rounds:
        assert 1 <= row["clusters_found"] <= 12 and 0 <= row["accuracy_many_to_one"] <= 1
        assert sum(row["clusters_found_posterior"].values()) == pytest.approx(1.0)
    assert (out / "figures" / "clusters_found.png").exists()
    prior = np.load(out / "iteration_0" / "prior.npz")  # the message over all 12 clusters, emptied ones too
    assert np.isfinite(prior["mean"]).all() and (prior["var"] > 0).all()
    assert "K found" in (out / "report.md").read_text(encoding="utf-8")
    assert json.loads((out / "config.json").read_text())["n_clusters"] == "auto"
    with pytest.raises(SystemExit):  # argparse: usage and "expected a number of clusters or auto"
        main(["train", "--data", "digits", "--clusters", "lots", "--out", str(tmp_path / "x")])


def test_evaluate_reports_the_k_found_and_reads_out_with_it():
    from vaegmm.evaluate import evaluate

    config = TrainConfig(data="digits", max_samples=300, n_clusters="auto", max_clusters=12, gmm_prior="data",
                         vae_epochs=2, round0_epochs=2, gmm_sweeps=6, latent_dim=4, hidden_dims=(32,), device="cpu")
    seed = evaluate(config, seeds=[0])["per_seed"][0]
    for setting in ("round0", "apart", "mutual"):
        assert 1 <= seed[setting]["clusters_found"] <= 12 and 0 <= seed["readout"][setting]["ari"] <= 1
