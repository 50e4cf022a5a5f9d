"""The Metropolis-Hastings naming game: its acceptance rule and sign draws against
direct formulas, its baselines, and the command end to end."""

import itertools
import json

import numpy as np
import pytest
import torch
from scipy import stats

from test_engine import kill_and_resume
from vaegmm.cli import main
from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.engine import Inbox, StepContext
from vaegmm.gmm import GibbsGMM
from vaegmm.naming_game import NamingGame, adopt_names, fit_naming_game, mh_acceptance, rotated_view, speak


def _blobs(seed=0, n=300):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    labels = rng.integers(3, size=n)
    return centres[labels] + rng.normal(scale=0.6, size=(n, 2)), labels


def test_acceptance_is_the_ratio_of_the_listener_gaussians():
    X, labels = _blobs()
    gmm = GibbsGMM(3, n_sweeps=20, random_state=0, n_chains=1).fit(X)
    rng = np.random.default_rng(1)
    proposed, current = rng.integers(3, size=len(X)), rng.integers(3, size=len(X))
    density = np.stack([stats.multivariate_normal(gmm.means_[k], gmm.covariances_[k]).pdf(X) for k in range(3)], 1)
    rows = np.arange(len(X))
    expected = np.minimum(1.0, density[rows, proposed] / density[rows, current])
    np.testing.assert_allclose(mh_acceptance(gmm, X, proposed, current), expected, rtol=1e-8)
    assert np.all(mh_acceptance(gmm, X, current, current) == 1.0)


def test_speaker_draws_signs_from_its_posterior():
    X, _ = _blobs()
    gmm = GibbsGMM(3, n_sweeps=20, random_state=0, n_chains=1).fit(X)
    point = np.array([[2.0, 1.5]])  # between clusters: no probability near 0 or 1
    probabilities = gmm.predict_proba(point)[0]
    draws = speak(gmm, np.repeat(point, 20000, axis=0), np.random.default_rng(2))
    frequencies = np.bincount(draws, minlength=3) / len(draws)
    assert stats.chisquare(np.bincount(draws, minlength=3), probabilities * len(draws)).pvalue > 1e-3
    np.testing.assert_allclose(frequencies, probabilities, atol=0.02)


def test_resample_parameters_draws_from_the_posterior_given_labels():
    X, labels = _blobs(n=3000)
    gmm = GibbsGMM(3, n_sweeps=2, random_state=0, n_chains=1).fit(X)
    gmm.resample_parameters(X, labels, random_state=3)
    for k in range(3):  # 1000 points per cluster: the posterior is tight around the sample moments
        np.testing.assert_allclose(gmm.means_[k], X[labels == k].mean(axis=0), atol=0.1)
    np.testing.assert_allclose(gmm.weights_, np.bincount(labels) / len(labels), atol=0.05)
    assert np.array_equal(gmm.labels_, labels)
    with pytest.raises(ValueError, match="labels must be 3000 integers in 0..2"):
        gmm.resample_parameters(X, np.full(len(X), 3))


def test_adopt_names_is_the_renaming_with_the_most_agreement():
    rng = np.random.default_rng(0)
    for _ in range(20):
        heard = rng.integers(4, size=60)
        own = np.where(rng.random(60) < 0.6, rng.permutation(4)[heard], rng.integers(4, size=60))
        best = max((np.mean(np.asarray(p)[own] == heard), p) for p in itertools.permutations(range(4)))[0]
        renamed = adopt_names(own, heard, 4)
        assert np.mean(renamed == heard) == pytest.approx(best)
        assert len({(a, b) for a, b in zip(own, renamed)}) == len(set(own))  # one new name per category
    assert np.array_equal(adopt_names(np.array([2, 2, 0, 1]), np.array([0, 0, 1, 2]), 3), [0, 0, 1, 2])


def test_the_own_start_begins_from_agreeing_categories():
    X, _ = _blobs(n=600)
    turned = X @ np.array([[0.0, -1.0], [1.0, 0.0]])  # agent B's view: the same data, rotated
    config = TrainConfig(n_clusters=3, gmm_sweeps=1, gmm_prior="data", gmm_chains=1, manifold="none", device="cpu")
    inbox = Inbox([("agent_a", "latents", X), ("agent_b", "latents", turned)])
    first_turn = {}
    for start in ("own", "random"):
        game = NamingGame("game", config, "mh", torch.device("cpu"), start=start)
        first_turn[start] = game.step(inbox, StepContext(0, np.random.SeedSequence(0)))["kappa"]
    assert first_turn["own"] > 0.95 and first_turn["random"] < 0.5, first_turn
    assert game.describe()["mode"] == "mh" and "start" not in game.describe()  # games saved before it resume
    with pytest.raises(ValueError, match="start must be one of own, random"):
        NamingGame("game", config, "mh", torch.device("cpu"), start="agreed")


def test_rotated_view_turns_the_images():
    data = load_dataset("digits", max_samples=20, seed=0)
    quarter = rotated_view(data, 90.0)
    np.testing.assert_allclose(quarter.images, np.rot90(data.images, k=-1, axes=(1, 2)), atol=1e-5)
    assert quarter.labels is data.labels


@pytest.fixture(scope="module")
def tiny():
    data = load_dataset("digits", max_samples=200, seed=0)
    config = TrainConfig(data="digits", vae_epochs=2, round0_epochs=2, gmm_sweeps=4, mutual_iterations=2,
                         latent_dim=4, hidden_dims=(32,), batch_size=64, n_clusters=4, gmm_prior="data",
                         gmm_init="kmeans++", device="cpu")
    return data, config


def test_baselines_reject_all_and_accept_all(tiny):
    data, config = tiny
    none = fit_naming_game(data, config, mode="none", progress=False, log=None)
    assert all(record["acceptance"] == 0.0 for record in none.iterations)
    assert len({record["kappa"] for record in none.iterations}) == 1  # no sign ever changes
    accept = fit_naming_game(data, config, mode="all", progress=False, log=None)
    assert all(record["acceptance"] == 1.0 for record in accept.iterations)
    mh = fit_naming_game(data, config, mode="mh", progress=False, log=None)
    assert 0.0 < mh.iterations[-1]["acceptance"] < 1.0
    again = fit_naming_game(data, config, mode="mh", progress=False, log=None)
    assert [r["kappa"] for r in again.iterations] == [r["kappa"] for r in mh.iterations]  # reproducible from the seed
    with pytest.raises(ValueError, match="mode must be one of mh, none, all"):
        fit_naming_game(data, config, mode="some", progress=False, log=None)


def test_naming_game_command_writes_metrics_reports_and_agent_runs(tmp_path, capsys):
    out = tmp_path / "game"
    flags = ["--data", "digits", "--max-samples", "200", "--vae-iter", "2", "--round0-epochs", "2", "--gmm-iter", "3",
             "--mutual-iterations", "2", "--latent-dim", "4", "--hidden-dims", "32", "--clusters", "4",
             "--gmm-prior", "data", "--gmm-init", "kmeans++", "--quiet", "--device", "cpu"]
    assert main(["naming-game", "--out", str(out), *flags]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "mh" and [r["iteration"] for r in metrics["iterations"]] == [0, 1]
    for record in metrics["iterations"]:
        assert -1.0 <= record["kappa"] <= 1.0 and len(record["agents"]) == 2
        for agent in record["agents"]:
            assert {"accuracy", "ari", "nmi"} <= set(agent) and 0.0 <= agent["accuracy"] <= 1.0
    assert (out / "report.md").exists() and (out / "figures" / "naming_game.png").exists()
    for agent in ("agent_a", "agent_b"):
        assert (out / agent / "report.html").exists() and (out / agent / "iteration_1" / "history.json").exists()
        assert (out / agent / "figures" / "reconstructions.png").exists()
    assert "kappa" in capsys.readouterr().out
    (out / "report.md").unlink()
    assert main(["report", "--run", str(out)]) == 0 and (out / "report.md").exists()
    capsys.readouterr()
    before = (out / "metrics.json").read_bytes()
    assert main(["naming-game", "--out", str(out), *flags]) == 0  # the finished game is kept
    assert "already holds this run, finished" in capsys.readouterr().out
    assert main(["naming-game", "--out", str(out), *flags, "--mode", "all"]) == 2  # a different game is refused
    assert "different run" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before
    assert json.loads((out / "game.json").read_text())["start"] == "own"


KILLED_GAME = """
    from vaegmm import TrainConfig
    from vaegmm.data import load_dataset
    from vaegmm.naming_game import fit_naming_game

    data = load_dataset("digits", max_samples=120, seed=0)
    config = TrainConfig(vae_epochs=3, round0_epochs=2, gmm_sweeps=4, mutual_iterations=2, latent_dim=3,
                         hidden_dims=(16,), batch_size=32, n_clusters=4, gmm_chains=1, prior_from="last",
                         manifold="none")  # (three processes; UMAP's compilation would be paid in each)
    fit_naming_game(data, config, run_dir=sys.argv[1], resume=sys.argv[3] == "resume", progress=False, log=None,
                    stop_requested=stop_requested)
"""


@pytest.mark.parametrize("kill_at", [5, 10])  # inside round 0's agent B VAE; inside round 1's agent A VAE
def test_a_game_killed_by_sigkill_resumes_to_the_same_metrics(tmp_path, kill_at):
    straight, killed = kill_and_resume(tmp_path, KILLED_GAME, kill_at)

    def scores(root):
        rounds = json.loads((root / "metrics.json").read_text())["iterations"]
        return [(r["kappa"], r["acceptance"], r["agents"], r["turns"]) for r in rounds]

    assert scores(killed) == scores(straight)
    assert len(scores(killed)) == 2


def test_resuming_a_game_with_other_flags_is_refused_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "game"
    flags = ["--data", "digits", "--max-samples", "120", "--vae-iter", "2", "--gmm-iter", "2", "--latent-dim", "3",
             "--hidden-dims", "16", "--clusters", "4", "--quiet", "--no-figures", "--set", "gmm_chains=1"]
    assert main(["naming-game", "--out", str(out), *flags]) == 0
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    capsys.readouterr()
    assert main(["naming-game", "--resume", str(out), "--vae-iter", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "Cannot resume" in error and "vae_epochs" in error
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    assert main(["naming-game", "--resume", str(out)]) == 0  # finished: nothing to play
