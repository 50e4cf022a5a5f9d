"""vaegmm evaluate (seeds, baselines, summary) and vaegmm predict (new data, training matching)."""

import json

import numpy as np
import pytest
import torch

from vaegmm.cli import main
from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.evaluate import evaluate, predict
from vaegmm.metrics import match_clusters
from vaegmm.mutual import fit_mutual

TINY = dict(data="digits", max_samples=300, vae_epochs=2, gmm_sweeps=5, latent_dim=3, n_clusters=5,
            batch_size=64, hidden_dims=(32,), device="cpu", gmm_init="kmeans++")


def test_evaluate_scores_round0_apart_and_mutual_per_seed(tmp_path):
    torch.set_num_threads(1)
    config = TrainConfig(**TINY)
    evaluation = evaluate(config, seeds=(3, 4), out=tmp_path, progress=False)
    assert [s["seed"] for s in evaluation["per_seed"]] == [3, 4]
    dataset = load_dataset("digits", max_samples=300, seed=0)
    # The apart baseline is one round of vae_epochs * mutual_iterations epochs, same seed.
    apart = fit_mutual(dataset, config.replace(seed=4, mutual_iterations=1, vae_epochs=4), progress=False, log=None)
    assert evaluation["per_seed"][1]["apart"]["accuracy"] == apart.rounds[0].metrics["accuracy"]
    mutual = fit_mutual(dataset, config.replace(seed=3), progress=False, log=None)
    assert evaluation["per_seed"][0]["round0"]["nmi"] == mutual.rounds[0].metrics["nmi"]
    assert evaluation["per_seed"][0]["mutual"]["nmi"] == mutual.rounds[-1].metrics["nmi"]
    accuracies = [s["mutual"]["accuracy"] for s in evaluation["per_seed"]]
    assert evaluation["summary"]["mutual"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert evaluation["summary"]["mutual"]["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["summary"] == evaluation["summary"]
    assert (tmp_path / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
