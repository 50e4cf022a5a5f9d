"""vaegmm evaluate (seeds, baselines, summary) and vaegmm predict (new data, training matching)."""

import json

import numpy as np
import pytest
import torch

from vaegmm.cli import main
from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.evaluate import SUITE, apart_config, evaluate, evaluate_suite, format_suite, predict, readout_metrics
from vaegmm.metrics import match_clusters
from vaegmm.mutual import fit_mutual

TINY = dict(data="digits", manifold="none", max_samples=300, vae_epochs=2, gmm_sweeps=5, latent_dim=3, n_clusters=5,
            batch_size=64, hidden_dims=(32,), device="cpu", gmm_init="kmeans++")


def test_evaluate_scores_round0_apart_and_mutual_per_seed(tmp_path):
    torch.set_num_threads(1)
    config = TrainConfig(**TINY)
    evaluation = evaluate(config, seeds=(3, 4), out=tmp_path, progress=False)
    assert [s["seed"] for s in evaluation["per_seed"]] == [3, 4]
    # Each run draws its subset of the data with its own seed.
    dataset = load_dataset("digits", max_samples=300, seed=4)
    # The apart baseline is one round of as many epochs as all rounds together (1 + 2), same seed.
    apart = fit_mutual(dataset, config.replace(seed=4, mutual_iterations=1, vae_epochs=3, round0_epochs=3),
                       progress=False, log=None)
    assert evaluation["per_seed"][1]["apart"]["accuracy"] == apart.rounds[0].metrics["accuracy"]
    assert evaluation["per_seed"][1]["readout"]["apart"] == readout_metrics(apart.rounds[0].latents, dataset.labels, 5, 4)
    dataset = load_dataset("digits", max_samples=300, seed=3)
    mutual = fit_mutual(dataset, config.replace(seed=3), progress=False, log=None)
    assert evaluation["per_seed"][0]["round0"]["nmi"] == mutual.rounds[0].metrics["nmi"]
    assert evaluation["per_seed"][0]["mutual"]["nmi"] == mutual.rounds[-1].metrics["nmi"]
    accuracies = [s["mutual"]["accuracy"] for s in evaluation["per_seed"]]
    assert evaluation["summary"]["mutual"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert evaluation["summary"]["mutual"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["summary"] == evaluation["summary"]
    assert (tmp_path / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_apart_baseline_trains_as_many_epochs_with_everything_but_the_message():
    config = TrainConfig(**TINY, round0_epochs=7, mutual_iterations=3, augment_rotation=10.0, augment_target="clean",
                         prior_from="mixture")
    apart = apart_config(config)
    assert apart.mutual_iterations == 1 and apart.first_round_epochs == 7 + 2 * 2 == config.total_epochs
    assert apart_config(TrainConfig()).first_round_epochs == 100 + 200
    assert (apart.augment_rotation, apart.augment_target, apart.hidden_dims) == (10.0, "clean", config.hidden_dims)


def test_readout_is_em_with_restarts_scored_by_labels():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 100)
    latents = rng.normal(size=(300, 2)) * 0.3 + np.array([[0, 0], [4, 0], [0, 4]])[labels]
    scores = readout_metrics(latents, labels, 3, seed=1)
    assert scores["accuracy"] == 1.0 and scores["ari"] == pytest.approx(1.0)
    assert readout_metrics(latents, labels, 3, seed=1) == scores  # deterministic for a seed


def test_suite_scores_every_dataset_and_the_pooled_margins(tmp_path, capsys):
    torch.set_num_threads(1)
    config = TrainConfig(**{**TINY, "max_samples": 200})
    suite = evaluate_suite(config, ["digits", "mnist5k-imbalanced"], seeds=(0, 1), out=tmp_path, progress=False)
    assert list(suite["datasets"]) == ["digits", "mnist5k-imbalanced"]
    runs = [s for ev in suite["datasets"].values() for s in ev["per_seed"]]
    gain = [100 * (s["mutual"]["accuracy"] - s["apart"]["accuracy"]) for s in runs]
    assert suite["overall"]["margins"]["over_apart"] == pytest.approx(np.mean(gain))
    above = sum(s["mutual"]["accuracy"] > s["round0"]["accuracy"] for s in runs)
    assert suite["overall"]["margins"]["seeds_above_round0"] == above and suite["overall"]["margins"]["seeds"] == 4
    assert (tmp_path / "suite.json").exists() and (tmp_path / "mnist5k-imbalanced" / "evaluation.png").exists()
    text = "\n".join(format_suite(suite))
    assert "digits" in text and "overall" in text and "EM read-out" in text
    # The CLI's default suite is the library's.
    from vaegmm.cli import _SUITE
    assert _SUITE == SUITE


def test_evaluate_refuses_unlabelled_data(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((50, 8, 8)))
    with pytest.raises(ValueError, match="needs labelled data"):
        evaluate(TrainConfig(**{**TINY, "data": str(tmp_path / "x.npz"), "max_samples": None}), seeds=(0,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run"
    torch.set_num_threads(1)
    fit_mutual(load_dataset("digits", max_samples=300), TrainConfig(**TINY), run_dir=out, progress=False, log=None)
    return out


def test_predict_uses_the_training_matching(trained, tmp_path):
    digits = load_dataset("digits")
    np.savez(tmp_path / "new.npz", x=digits.images[-200:], y=digits.labels[-200:])
    prediction = predict(trained, str(tmp_path / "new.npz"))
    assert prediction["probabilities"].shape == (200, 5)
    np.testing.assert_allclose(prediction["probabilities"].sum(axis=1), 1.0)
    np.testing.assert_array_equal(prediction["assignments"], prediction["probabilities"].argmax(axis=1))
    mapping = match_clusters(np.load(trained / "labels.npy"), np.load(trained / "iteration_1" / "assignments.npy"))
    expected = np.mean([mapping.get(int(k), -1) == y for k, y in zip(prediction["assignments"], digits.labels[-200:])])
    assert prediction["metrics"]["accuracy"] == pytest.approx(expected)


def test_predict_cli_writes_files_and_refuses_other_image_sizes(trained, tmp_path, capsys):
    assert main(["predict", "--run", str(trained), "--data", "digits", "--out", str(tmp_path / "p")]) == 0
    lines = (tmp_path / "p" / "predictions.csv").read_text().splitlines()
    assert lines[0].startswith("index,cluster,label,p0") and len(lines) == 1 + 1797
    assert json.loads((tmp_path / "p" / "metrics.json").read_text())["iteration"] == 1
    assert main(["predict", "--run", str(trained), "--data", "mnist5k", "--out", str(tmp_path / "q")]) == 2
    assert "8x8 images" in capsys.readouterr().err
