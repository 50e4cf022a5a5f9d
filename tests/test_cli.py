"""End-to-end tests of the command line (``vaegmm train | decode | plot-gmm | figures``) and of
the reference's Python API (``train_model``, ``decode_from_gmm_param``, ``plot_dist``).

Everything runs with tiny settings (digits, a few hundred images, 2 epochs, 3 sweeps). The
trained runs are module-scoped fixtures: training happens a few times per file, not per test.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaegmm.cli import main
from vaegmm.config import TrainConfig
from vaegmm.metrics import clustering_metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIMING_KEYS = {"seconds", "vae_seconds", "gmm_seconds"}
# Figures every run with labels gets (others, e.g. t-SNE, may come and go with the plotting code).
FIGURES = ("elbo.png", "sweep_metrics.png", "latent_pca.png", "clusters_iteration1.png")
GMM_FIGURE = "gmm_iteration1_cluster*.png"  # the cluster plotted is chosen by the run

TRAIN_ARGS = [
    "--data", "digits", "--max-samples", "300", "--vae-iter", "2", "--gmm-iter", "3",
    "--latent-dim", "3", "--clusters", "5", "--batch-size", "64", "--quiet", "--seed", "0", "--manifold", "none",
]  # (--manifold none: these tests are about the rest; tests/test_manifold.py runs the default)
TRAIN_CONFIG = TrainConfig(
    data="digits", max_samples=300, vae_epochs=2, gmm_sweeps=3, latent_dim=3, n_clusters=5,
    batch_size=64, seed=0, manifold="none",
)
N, K, L = 300, 5, 3
API_SAMPLES = 600

# Much smaller still: for the tests that only need some run in a directory.
TINY_ARGS = [
    "--data", "digits", "--max-samples", "40", "--mutual-iterations", "1", "--vae-iter", "1",
    "--gmm-iter", "1", "--latent-dim", "2", "--clusters", "3", "--manifold", "none", "--quiet", "--no-figures",
]


def assert_png(path, min_bytes=1000):
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) >= min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 10 and height > 10


def strip_timings(rows):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def assert_one_line_error(capsys, *phrases):
    """exit status already checked; stderr is one 'vaegmm: error:' line without a traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("vaegmm: error:"), lines[0]
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Fixtures: trained runs
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """One torch thread: the models are tiny, and on a shared 2-core machine several threads
    fighting over the cores make training many times slower. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def subprocess_started(tmp_path_factory):
    """Start ``python -m vaegmm.cli train`` in a fresh process; it runs while the in-process run
    trains (its imports alone take seconds)."""
    out = tmp_path_factory.mktemp("subprocess") / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "vaegmm.cli", "train", *TRAIN_ARGS, "--out", str(out), "--no-figures",
         "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(out.parent),
    )
    yield out, process
    if process.poll() is None:  # not waited for (tests deselected): stop it
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, subprocess_started):
    """A run trained in-process through ``vaegmm.cli.main`` (figures included)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TRAIN_ARGS, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def subprocess_run(subprocess_started):
    """The same run trained by ``python -m vaegmm.cli`` in a fresh process: (out, CompletedProcess)."""
    out, process = subprocess_started
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return out, subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def digits_dataset():
    from sklearn.datasets import load_digits
    from torch.utils.data import TensorDataset

    digits = load_digits()
    # The first 600 of the 1,797 images keep the run (and its t-SNE figure) quick.
    images = torch.tensor(digits.images[:API_SAMPLES] / 16.0, dtype=torch.float32).unsqueeze(1)  # (n, 1, 8, 8)
    labels = torch.tensor(digits.target[:API_SAMPLES], dtype=torch.long)
    return TensorDataset(images, labels)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, digits_dataset):
    """The reference README's example through ``vaegmm.api.train_model``."""
    from torch.utils.data import DataLoader

    from vaegmm.api import train_model

    out = tmp_path_factory.mktemp("api") / "run"
    train_loader = DataLoader(digits_dataset, batch_size=32, shuffle=True)
    all_loader = DataLoader(digits_dataset, batch_size=500, shuffle=False)
    result = train_model(
        mutual_iteration=2, dir_name=str(out), train_loader=train_loader, all_loader=all_loader,
        vae_epochs=2, gmm_sweeps=3, latent_dim=3, n_clusters=5, progress=False,
    )
    return out, result


# ---------------------------------------------------------------------------------------------
# train: the run directory
# ---------------------------------------------------------------------------------------------
def test_train_writes_config(run_dir):
    config = TrainConfig.from_json(run_dir / "config.json")
    assert config == TRAIN_CONFIG
    assert json.loads((run_dir / "config.json").read_text()) == TRAIN_CONFIG.to_dict()


def test_train_writes_metrics(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"iterations"}
    rows = metrics["iterations"]
    assert [row["iteration"] for row in rows] == [0, 1]
    for row in rows:
        assert {"iteration", "accuracy", "ari", "nmi", "elbo"} <= set(row)
        assert 0.0 <= row["accuracy"] <= 1.0
        assert 0.0 <= row["nmi"] <= 1.0
        assert -1.0 <= row["ari"] <= 1.0
        assert np.isfinite(row["elbo"])
        for key in TIMING_KEYS & set(row):
            assert row[key] >= 0


def test_train_writes_labels(run_dir):
    labels = np.load(run_dir / "labels.npy")
    assert labels.shape == (N,)
    assert set(np.unique(labels)) <= set(range(10))


@pytest.mark.parametrize("iteration", [0, 1])
def test_train_writes_round_files(run_dir, iteration):
    folder = run_dir / f"iteration_{iteration}"
    for name in ("vae.pt", "gmm.npz", "latents.npy", "assignments.npy", "history.json"):
        assert (folder / name).is_file(), name

    checkpoint = torch.load(folder / "vae.pt", map_location="cpu", weights_only=True)
    assert {"state_dict", "vae_config", "image_shape"} <= set(checkpoint)
    assert list(checkpoint["image_shape"]) == [8, 8]
    assert checkpoint["vae_config"]["latent_dim"] == L

    with np.load(folder / "gmm.npz") as gmm:
        assert {"mu", "Lambda", "pi"} <= set(gmm.files)
        mu, precision, pi = gmm["mu"], gmm["Lambda"], gmm["pi"]
    assert mu.shape == (K, L)
    assert precision.shape == (K, L, L)
    assert pi.shape == (K,)
    assert np.all(np.isfinite(mu)) and np.all(np.isfinite(precision))
    np.testing.assert_allclose(precision, precision.transpose(0, 2, 1), atol=1e-8)
    assert np.all(np.linalg.eigvalsh(precision) > 0)
    assert np.all(pi >= 0) and np.isclose(pi.sum(), 1.0)

    latents = np.load(folder / "latents.npy")
    assert latents.shape == (N, L)
    assert np.all(np.isfinite(latents))
    assignments = np.load(folder / "assignments.npy")
    assert assignments.shape == (N,)
    assert np.issubdtype(assignments.dtype, np.integer)
    assert assignments.min() >= 0 and assignments.max() < K

    history = json.loads((folder / "history.json").read_text())
    assert len(history["elbo"]) == (TRAIN_CONFIG.first_round_epochs if iteration == 0 else TRAIN_CONFIG.round_epochs)
    assert all(np.isfinite(history["elbo"]))
    assert len(history["sweeps"]["accuracy"]) == TRAIN_CONFIG.gmm_sweeps
    assert all(0.0 <= a <= 1.0 for a in history["sweeps"]["accuracy"])
    # The round's accuracy in metrics.json is that of the reported state (the most probable
    # sweep's parameters), whose assignments are saved; the sweep is recorded.
    row = json.loads((run_dir / "metrics.json").read_text())["iterations"][iteration]
    labels = np.load(run_dir / "labels.npy")
    assert clustering_metrics(labels, assignments)["accuracy"] == pytest.approx(row["accuracy"])
    posterior = history["sweeps"]["log_posterior"]
    assert len(posterior) == TRAIN_CONFIG.gmm_sweeps
    assert posterior[history["sweeps"]["reported_sweep"]] == max(posterior)
    assert history["elbo"][-1] == pytest.approx(row["elbo"])


def test_train_writes_figures(run_dir):
    figures = run_dir / "figures"
    pngs = sorted(figures.glob("*.png"))
    for name in FIGURES:
        assert (figures / name) in pngs, name
    assert list(figures.glob(GMM_FIGURE))
    for path in pngs:
        assert_png(path)


# ---------------------------------------------------------------------------------------------
# The entry point as a program, and reproducibility
# ---------------------------------------------------------------------------------------------
def test_module_entry_point_runs_as_a_program(subprocess_run):
    out, completed = subprocess_run
    assert completed.returncode == 0, completed.stderr
    assert "Traceback" not in completed.stderr
    assert "round 1" in completed.stdout
    assert TrainConfig.from_json(out / "config.json") == TRAIN_CONFIG
    assert (out / "iteration_1" / "history.json").is_file()
    assert not (out / "figures").exists()  # --no-figures


def test_same_seed_gives_identical_metrics(run_dir, subprocess_run):
    out, completed = subprocess_run
    assert completed.returncode == 0, completed.stderr
    first = json.loads((run_dir / "metrics.json").read_text())["iterations"]
    second = json.loads((out / "metrics.json").read_text())["iterations"]
    assert strip_timings(first) == strip_timings(second)
    for iteration in (0, 1):
        for name in ("latents.npy", "assignments.npy"):
            a = np.load(run_dir / f"iteration_{iteration}" / name)
            b = np.load(out / f"iteration_{iteration}" / name)
            assert np.array_equal(a, b), (iteration, name)


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "decode", "plot-gmm", "figures"):
        assert command in out


# ---------------------------------------------------------------------------------------------
# decode, plot-gmm, figures
# ---------------------------------------------------------------------------------------------
def test_decode_writes_png(run_dir, tmp_path, capsys):
    out = tmp_path / "decoded.png"
    code = main(["decode", "--run", str(run_dir), "--iteration", "1", "--cluster", "2", "--samples", "9",
                 "--out", str(out)])
    assert code == 0
    assert_png(out)
    assert str(out) in capsys.readouterr().out


def test_decode_defaults_to_last_iteration_in_figures(run_dir):
    assert main(["decode", "--run", str(run_dir), "--cluster", "3"]) == 0
    assert_png(run_dir / "figures" / "decode_iteration1_cluster3.png")


@pytest.mark.parametrize("dims", ["0,2", "pca"])
def test_plot_gmm_writes_png(run_dir, tmp_path, dims, capsys):
    out = tmp_path / f"gmm_{dims.replace(',', '_')}.png"
    code = main(["plot-gmm", "--run", str(run_dir), "--cluster", "1", "--dims", dims, "--out", str(out)])
    assert code == 0
    assert_png(out)
    assert str(out) in capsys.readouterr().out


def test_plot_gmm_default_path(run_dir):
    assert main(["plot-gmm", "--run", str(run_dir), "--iteration", "0", "--cluster", "4", "--dims", "1,2"]) == 0
    assert_png(run_dir / "figures" / "gmm_iteration0_cluster4.png")


def test_figures_command_rewrites_every_figure(run_dir, capsys):
    for path in (run_dir / "figures").glob("*.png"):
        path.unlink()
    assert main(["figures", "--run", str(run_dir)]) == 0
    written = [line[len("wrote "):] for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]
    assert written
    for path in written:
        assert_png(path)
    for name in FIGURES:
        assert_png(run_dir / "figures" / name)
        assert str(run_dir / "figures" / name) in written
    assert list((run_dir / "figures").glob(GMM_FIGURE))


# ---------------------------------------------------------------------------------------------
# Errors: exit status 2, one line on stderr, no traceback
# ---------------------------------------------------------------------------------------------
def test_error_missing_data_path(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    assert_one_line_error(capsys, "does not exist")
    assert not (tmp_path / "run" / "config.json").exists()


def test_error_more_clusters_than_data(tmp_path, capsys):
    code = main(["train", "--data", "digits", "--max-samples", "20", "--clusters", "50",
                 "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    line = assert_one_line_error(capsys)
    assert "clusters" in line
    assert "20" in line and "50" in line
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_error_cuda_device_without_cuda(tmp_path, capsys):
    code = main(["train", *TINY_ARGS, "--device", "cuda", "--out", str(tmp_path / "run")])
    assert code == 2
    assert_one_line_error(capsys, "CUDA")
    assert not (tmp_path / "run").exists()


def test_error_decode_missing_iteration(run_dir, capsys):
    code = main(["decode", "--run", str(run_dir), "--iteration", "7", "--out", str(run_dir / "never.png")])
    assert code == 2
    assert_one_line_error(capsys, "7", "available rounds: 0, 1")
    assert not (run_dir / "never.png").exists()


def test_error_decode_missing_cluster(run_dir, capsys):
    code = main(["decode", "--run", str(run_dir), "--iteration", "1", "--cluster", "9"])
    assert code == 2
    assert_one_line_error(capsys, "Cluster 9", "0..4")


def test_error_plot_gmm_bad_dims(run_dir, capsys):
    code = main(["plot-gmm", "--run", str(run_dir), "--dims", "0,3"])  # L = 3: dims 0..2
    assert code == 2
    assert_one_line_error(capsys, "dims")


def test_error_decode_not_a_run_directory(tmp_path, capsys):
    code = main(["decode", "--run", str(tmp_path)])
    assert code == 2
    assert_one_line_error(capsys, "no completed round")


def test_error_unknown_config_key(tmp_path, capsys):
    config = TRAIN_CONFIG.to_dict()
    config["bogus_key"] = 3
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = main(["train", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 2
    assert_one_line_error(capsys, "bogus_key")
    assert not (tmp_path / "run").exists()


def test_error_invalid_config_value(tmp_path, capsys):
    code = main(["train", *TINY_ARGS, "--latent-dim", "0", "--out", str(tmp_path / "run")])
    assert code == 2
    assert_one_line_error(capsys, "latent_dim")


def test_second_train_into_same_out(run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    before = (out / "config.json").read_text()

    # A different config: refused, nothing touched.
    code = main(["train", *TINY_ARGS, "--out", str(out)])
    assert code == 2
    assert_one_line_error(capsys, "--overwrite")
    assert (out / "config.json").read_text() == before

    # Accepted with --overwrite.
    code = main(["train", *TINY_ARGS, "--out", str(out), "--overwrite"])
    assert code == 0
    config = TrainConfig.from_json(out / "config.json")
    assert config.max_samples == 40 and config.n_clusters == 3 and config.mutual_iterations == 1
    rows = json.loads((out / "metrics.json").read_text())["iterations"]
    assert [row["iteration"] for row in rows] == [0]
    with np.load(out / "iteration_0" / "gmm.npz") as gmm:
        assert gmm["mu"].shape == (3, 2)

    # The same config again: the finished run is kept as it is (exit 0, said on stdout).
    capsys.readouterr()
    before = _file_bytes(out)
    assert main(["train", *TINY_ARGS, "--out", str(out)]) == 0
    assert "already holds this run, finished" in capsys.readouterr().out
    assert _file_bytes(out) == before


def _file_bytes(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_rerunning_a_finished_run_keeps_every_file(tmp_path, capsys):
    """The same command on a finished run (figures drawn there by the user included) changes no
    byte, says where the run is, and exits 0."""
    out = tmp_path / "run"
    assert main(["train", *TINY_ARGS, "--out", str(out)]) == 0
    assert main(["decode", "--run", str(out), "--cluster", "0", "--samples", "4"]) == 0
    before = _file_bytes(out)
    assert any(name.startswith("figures/decode") for name in before)
    capsys.readouterr()
    assert main(["train", *TINY_ARGS, "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert f"{out} already holds this run, finished (1 round); nothing was changed" in said.out
    assert said.err == ""
    assert _file_bytes(out) == before


def test_rerunning_an_interrupted_run_says_resume_and_keeps_every_file(tmp_path, capsys, monkeypatch):
    """A run stopped by Ctrl-C, then the same command again: refused with the --resume command,
    nothing touched; --resume then finishes it."""
    import vaegmm.cli as cli

    class ControlC:  # the Ctrl-C handler's flag, already set: stop at the first epoch end
        requested = True

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    out = tmp_path / "run"
    args = ["train", *TINY_ARGS, "--mutual-iterations", "2", "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr(cli, "_DeferredInterrupt", ControlC)
        assert main(args) == 130
    assert (out / "checkpoint.pt").exists() and not (out / "metrics.json").exists()
    before = _file_bytes(out)
    capsys.readouterr()
    assert main(args) == 2
    assert_one_line_error(capsys, "interrupted run", f"vaegmm train --resume {out}")
    assert _file_bytes(out) == before
    assert main(["train", "--resume", str(out)]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["iterations"]) == 2


def test_out_beside_resume_must_name_the_same_run(run_dir, tmp_path, capsys):
    other = tmp_path / "elsewhere"
    assert main(["train", "--resume", str(run_dir), "--out", str(other)]) == 2
    assert_one_line_error(capsys, "drop --out")
    assert not other.exists()


def test_overwrite_removes_files_of_the_replaced_run(run_dir, tmp_path):
    """After --overwrite with fewer rounds and unlabelled data, nothing of the old run may be left:
    no round (decode/plot-gmm/figures default to the last round) and no labels (figures colour by them)."""
    from sklearn.datasets import load_digits

    from vaegmm.rundir import RunDirectory

    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    data = tmp_path / "unlabelled.npy"
    np.save(data, load_digits().images[:40] / 16.0)
    args = [arg if arg != "digits" else str(data) for arg in TINY_ARGS]
    assert main(["train", *args, "--out", str(out), "--overwrite"]) == 0
    assert RunDirectory(out).iterations() == [0]
    assert not (out / "iteration_1").exists()
    assert not (out / "labels.npy").exists()


# ---------------------------------------------------------------------------------------------
# The reference's Python API (README example)
# ---------------------------------------------------------------------------------------------
def test_api_train_model_writes_a_run(api_run, digits_dataset):
    out, result = api_run
    assert len(result.rounds) == 2
    config = TrainConfig.from_json(out / "config.json")
    assert config.mutual_iterations == 2 and config.batch_size == 32
    assert config.vae_epochs == 2 and config.gmm_sweeps == 3
    assert config.latent_dim == 3 and config.n_clusters == 5
    rows = json.loads((out / "metrics.json").read_text())["iterations"]
    assert [row["iteration"] for row in rows] == [0, 1]
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["nmi"] <= 1.0
    n = len(digits_dataset)
    assert np.load(out / "iteration_1" / "latents.npy").shape == (n, 3)
    assert np.load(out / "iteration_1" / "assignments.npy").shape == (n,)
    assert np.array_equal(np.load(out / "labels.npy"), digits_dataset.tensors[1].numpy())
    for name in FIGURES:
        assert_png(out / "figures" / name)
    assert list((out / "figures").glob(GMM_FIGURE))


def test_api_decode_from_gmm_param(api_run):
    from vaegmm.api import decode_from_gmm_param

    out, _ = api_run
    images = decode_from_gmm_param(iteration=1, decode_k=1, sample_num=16, model_dir=str(out))
    assert isinstance(images, np.ndarray)
    assert images.shape == (16, 8, 8)
    assert np.all(np.isfinite(images))
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert_png(out / "figures" / "decode_iteration1_cluster1.png")


def test_api_plot_dist(api_run):
    from vaegmm.api import plot_dist

    out, _ = api_run
    path = plot_dist(1, 1, 50, str(out))
    assert_png(path)
    assert Path(path) == out / "figures" / "gmm_iteration1_cluster1.png"


def test_api_refuses_shuffled_all_loader(digits_dataset, tmp_path):
    from torch.utils.data import DataLoader

    from vaegmm.api import train_model

    train_loader = DataLoader(digits_dataset, batch_size=32, shuffle=True)
    all_loader = DataLoader(digits_dataset, batch_size=500, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        train_model(
            mutual_iteration=2, dir_name=str(tmp_path / "run"), train_loader=train_loader,
            all_loader=all_loader, vae_epochs=1, gmm_sweeps=1, latent_dim=2, n_clusters=3, progress=False,
        )
    assert not (tmp_path / "run").exists()


def test_set_sets_any_config_field_by_name():
    from vaegmm.cli import _parser, _train_config

    args = _parser().parse_args(["train", "--clusters", "7", "--set", "prior_sweeps=20",
                                 "--set", "hidden_dims=[64, 32]", "--set", "prior_from=last"])
    config = _train_config(args)
    assert (config.n_clusters, config.prior_sweeps, config.hidden_dims, config.prior_from) == (7, 20, (64, 32), "last")


def test_evaluate_never_replaces_an_evaluation_without_overwrite(tmp_path, capsys):
    out = tmp_path / "evaluation"
    out.mkdir()
    (out / "evaluation.json").write_text('{"kept": true}')
    assert main(["evaluate", *TINY_ARGS[:-2], "--seeds", "0", "--out", str(out)]) == 2
    assert_one_line_error(capsys, "already holds an evaluation", "--overwrite")
    assert (out / "evaluation.json").read_text() == '{"kept": true}'


def test_every_config_field_is_set_by_its_generated_flag_or_by_set():
    import dataclasses

    from vaegmm.cli import SET_ONLY, _flag, _parser, _train_config
    from vaegmm.config import TrainConfig

    samples = {"data": "digits", "n_clusters": "7", "hidden_dims": "64,32", "conv_channels": "8,16", "device": "cpu",
               "manifold_min_dist": "0.5", "max_samples": "100"}
    expected = {"n_clusters": 7, "hidden_dims": (64, 32), "conv_channels": (8, 16), "manifold_min_dist": 0.5}
    for field in dataclasses.fields(TrainConfig):
        if field.name in SET_ONLY:
            continue
        if field.name in TrainConfig.CHOICES:
            value = TrainConfig.CHOICES[field.name][-1]
            text = value
        elif field.name in samples:
            text = samples[field.name]
            value = expected.get(field.name, int(text) if text.isdigit() else text)
        elif "float" in str(field.type):
            text, value = "0.25", 0.25
        else:
            text, value = "3", 3
        if field.name == "wishart_dof":
            text, value = "30", 30.0
        also = ["--manifold", "none"] if field.name == "prior_from" else []  # (mixture: not with the default UMAP)
        args = _parser().parse_args(["train", _flag(field.name), text, *also])
        assert getattr(_train_config(args), field.name) == value, field.name
    assert "send" in SET_ONLY and _flag("send") == "--set send=..."
    # One vocabulary (rounds, epochs, sweeps); the older flag names still answer.
    assert [_flag(name) for name in ("mutual_iterations", "vae_epochs", "gmm_sweeps")] == ["--rounds", "--epochs",
                                                                                          "--sweeps"]
    new = _train_config(_parser().parse_args(["train", "--rounds", "3", "--epochs", "4", "--sweeps", "5"]))
    old = _train_config(_parser().parse_args(["train", "--mutual-iterations", "3", "--vae-iter", "4", "--gmm-iter", "5"]))
    assert new == old and (new.mutual_iterations, new.vae_epochs, new.gmm_sweeps) == (3, 4, 5)
    args = _parser().parse_args(["train", "--set", "send=sample", "--set", "vae_init=warm"])
    assert (_train_config(args).send, _train_config(args).vae_init) == ("sample", "warm")
