"""Checkpoints and resume: an interrupted run, resumed, ends exactly as an uninterrupted one."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from vaegmm.cli import main
from vaegmm.config import TrainConfig
from vaegmm.data import load_dataset
from vaegmm.mutual import fit_mutual
from vaegmm.rundir import RunDirectory, RunError


class _Killed(Exception):
    """Stands for the process dying right after a write."""


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", max_samples=300)


def _config(**changes):
    values = dict(data="digits", max_samples=300, vae_epochs=5, round0_epochs=5, gmm_sweeps=4, latent_dim=3, n_clusters=5,
                  batch_size=64, hidden_dims=(32,), device="cpu")
    return TrainConfig(**{**values, **changes})


def _assert_same_rounds(expected, got):
    assert len(expected.rounds) == len(got.rounds)
    for a, b in zip(expected.rounds, got.rounds):
        assert a.elbo == b.elbo and a.loss == b.loss
        np.testing.assert_array_equal(a.latents, b.latents)
        np.testing.assert_array_equal(a.assignments, b.assignments)
        np.testing.assert_array_equal(a.gmm.means_, b.gmm.means_)
        np.testing.assert_array_equal(a.gmm.precisions_, b.gmm.precisions_)
        assert a.sweeps == b.sweeps


@pytest.mark.parametrize("options", [
    {},
    {"vae_init": "warm", "send": "sample", "prior_covariance": "full"},
    {"prior_from": "average", "prior_sweeps": 2, "chain_init": "previous", "gmm_chains": 2, "mutual_iterations": 3,
     "manifold": "none"},
    {"prior_from": "mixture", "manifold": "none", "vae_init": "warm", "round0_epochs": 7, "augment_rotation": 10.0, "augment_shift": 0.1,
     "augment_scale": 0.1, "augment_target": "clean", "gmm_init": "em"},
])
@pytest.mark.parametrize("die_at", ["save_checkpoint", "save_round", "save_metrics"])
def test_resume_after_death_at_any_write_equals_uninterrupted(digits, tmp_path, monkeypatch, options, die_at):
    torch.set_num_threads(1)
    config = _config(**options)
    uninterrupted = fit_mutual(digits, config, run_dir=tmp_path / "full", progress=False, log=None,
                               checkpoint_every=2)
    original = getattr(RunDirectory, die_at)
    n_writes = {"save_checkpoint": 8, "save_round": 2, "save_metrics": 2}[die_at]
    for kill_after in range(1, n_writes + 1):
        calls = []

        def dying(self, *args, **kwargs):
            original(self, *args, **kwargs)
            calls.append(1)
            if len(calls) == kill_after:
                raise _Killed

        monkeypatch.setattr(RunDirectory, die_at, dying)
        with pytest.raises(_Killed):
            fit_mutual(digits, config, run_dir=tmp_path / "part", progress=False, log=None,
                       checkpoint_every=2, overwrite=True)
        monkeypatch.setattr(RunDirectory, die_at, original)
        resumed = fit_mutual(digits, config, run_dir=tmp_path / "part", progress=False, log=None,
                             checkpoint_every=2, resume=True)
        _assert_same_rounds(uninterrupted, resumed)
        assert json.loads((tmp_path / "part" / "metrics.json").read_text())["iterations"][-1]["accuracy"] == \
            uninterrupted.rounds[-1].metrics["accuracy"]


def test_resume_with_a_different_config_names_the_keys(digits, tmp_path):
    fit_mutual(digits, _config(), run_dir=tmp_path, progress=False, log=None)
    with pytest.raises(RunError, match=r"batch_size \(64 -> 32\).*seed \(0 -> 5\)"):
        fit_mutual(digits, _config(batch_size=32, seed=5), run_dir=tmp_path, progress=False, log=None, resume=True)


def test_resume_refuses_a_damaged_checkpoint(digits, tmp_path):
    fit_mutual(digits, _config(mutual_iterations=1), run_dir=tmp_path, progress=False, log=None)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match=r"Cannot read .*checkpoint\.pt: it is damaged"):
        fit_mutual(digits, _config(mutual_iterations=1), run_dir=tmp_path, progress=False, log=None, resume=True)


_CLI_TRAIN = [sys.executable, "-m", "vaegmm.cli", "train", "--data", "digits", "--max-samples", "400",
              "--vae-iter", "25", "--gmm-iter", "5", "--latent-dim", "3", "--clusters", "5", "--batch-size", "32",
              "--hidden-dims", "64", "--checkpoint-every", "1", "--no-figures", "--quiet", "--threads", "1",
              "--manifold", "none"]


def _comparable(run_dir):
    rows = json.loads((run_dir / "metrics.json").read_text())["iterations"]
    for row in rows:
        for key in ("seconds", "vae_seconds", "gmm_seconds"):
            row.pop(key)
    with np.load(run_dir / "iteration_1" / "gmm.npz") as gmm:
        return rows, {name: gmm[name].copy() for name in gmm.files}


def _start_and_stop(out, sig, seed):
    """Start a CLI training run, wait for its first checkpoint plus a random moment, send ``sig``."""
    process = subprocess.Popen([*_CLI_TRAIN, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 2.0))
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr.decode()


@pytest.fixture(scope="module")
def uninterrupted_cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "full"
    subprocess.run([*_CLI_TRAIN, "--out", str(out)], check=True, capture_output=True)
    return _comparable(out)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_cli_killed_at_a_random_moment_then_resumed_equals_uninterrupted(tmp_path, uninterrupted_cli_run, sig):
    out = tmp_path / "run"
    returncode, stderr = _start_and_stop(out, sig, seed=os.getpid())
    if sig == signal.SIGINT:
        if returncode == 130:  # stopped cleanly at an epoch end, with a hint how to go on
            assert "--resume" in stderr and "Traceback" not in stderr
        else:  # the signal came after training had finished (0), or during interpreter exit
            assert returncode in (0, -signal.SIGINT) and RunDirectory(out).iterations() == [0, 1]
    subprocess.run([*_CLI_TRAIN[:3], "train", "--resume", str(out), "--no-figures", "--quiet", "--threads", "1"],
                   check=True, capture_output=True)
    expected_rows, expected_gmm = uninterrupted_cli_run
    rows, gmm = _comparable(out)
    assert rows == expected_rows
    for name in expected_gmm:
        np.testing.assert_array_equal(gmm[name], expected_gmm[name])


def test_cli_resume_with_changed_flags_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--max-samples", "100", "--vae-iter", "1", "--gmm-iter", "2",
                 "--latent-dim", "2", "--clusters", "3", "--out", str(out), "--no-figures", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--clusters", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaegmm: error: Cannot resume") and "n_clusters (3 -> 4)" in err
    assert main(["train", "--resume", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(digits, tmp_path, monkeypatch):
    import vaegmm.mutual as mutual

    config = _config()
    original = mutual.PriorMessage.kl
    calls = []

    def poisoned(*args, **kwargs):  # NaN from the third epoch of round 0 on (5 batches an epoch)
        kl = original(*args, **kwargs)
        calls.append(1)
        return kl * float("nan") if len(calls) > 10 else kl

    monkeypatch.setattr(mutual.PriorMessage, "kl", poisoned)
    with pytest.raises(FloatingPointError, match="NaN or infinite in epoch 3"):
        fit_mutual(digits, config, run_dir=tmp_path, progress=False, log=None, checkpoint_every=1)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert (state["round"], state["in_step"]["epoch"]) == (0, 2)  # inside round 0's VAE step, after epoch 2
    assert all(torch.isfinite(v).all() for v in state["in_step"]["vae"]["vae"].values())
    monkeypatch.setattr(mutual.PriorMessage, "kl", original)
    resumed = fit_mutual(digits, config, run_dir=tmp_path, progress=False, log=None, resume=True)
    _assert_same_rounds(fit_mutual(digits, config, progress=False, log=None), resumed)
