"""Every bad input: one sentence on stderr, exit status 2, no traceback, and the run already in
the output directory left exactly as it was (even with --overwrite)."""

import hashlib
import struct

import numpy as np
import pytest
import torch

from vaegmm.cli import main

TINY = ["--vae-iter", "1", "--gmm-iter", "2", "--latent-dim", "3", "--clusters", "3", "--quiet", "--no-figures",
        "--manifold", "none"]


def _idx(array):
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    images = np.random.default_rng(0).integers(0, 255, (20, 8, 8))
    (folder / "notes.txt").write_text("not data")
    (folder / "badmagic-idx3-ubyte").write_bytes(b"\x01\x02" + _idx(images)[2:])
    (folder / "truncated-idx3-ubyte").write_bytes(_idx(images)[:-10])
    pair = folder / "pair"
    pair.mkdir()
    (pair / "train-images-idx3-ubyte").write_bytes(_idx(images))
    (pair / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(19, dtype=np.uint8)))
    nan = np.ones((20, 8, 8), dtype=np.float32)
    nan[3, 2, 2] = np.nan
    np.savez(folder / "nan.npz", x=nan)
    np.savez(folder / "inf.npz", x=np.full((20, 8, 8), np.inf, dtype=np.float32))
    np.savez(folder / "negative.npz", x=-np.ones((20, 8, 8)))
    np.savez(folder / "empty.npz", x=np.zeros((0, 8, 8)))
    return folder


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prev") / "run"
    torch.set_num_threads(1)
    assert main(["train", "--data", "digits", "--max-samples", "100", "--out", str(out), *TINY]) == 0
    return out


def _snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


CASES = {
    "missing path": (["--data", "{f}/does-not-exist"], "does not exist"),
    "not IDX or NPZ": (["--data", "{f}/notes.txt"], "neither an IDX file"),
    "IDX bad magic": (["--data", "{f}/badmagic-idx3-ubyte"], "bad magic number"),
    "IDX truncated": (["--data", "{f}/truncated-idx3-ubyte"], "truncated"),
    "image/label counts differ": (["--data", "{f}/pair"], "must match one to one"),
    "NaN pixels": (["--data", "{f}/nan.npz"], "NaN or infinite"),
    "inf pixels": (["--data", "{f}/inf.npz"], "NaN or infinite"),
    "negative pixels": (["--data", "{f}/negative.npz"], "negative pixels"),
    "empty dataset": (["--data", "{f}/empty.npz"], "holds no images"),
    "fewer points than clusters": (["--data", "digits", "--max-samples", "5", "--clusters", "10"],
                                   "use fewer clusters (n_clusters) or more data. (set by --clusters)"),
    "unknown --set field": (["--data", "digits", "--set", "n_clustres=3"], "expected FIELD=VALUE with FIELD one of"),
    "bad value through --set": (["--data", "digits", "--set", "prior_sweeps=0"], "prior_sweeps"),
    "K = 0": (["--data", "digits", "--clusters", "0"], "n_clusters must be a positive integer"),
    "latent dim 0": (["--data", "digits", "--latent-dim", "0"], "latent_dim must be a positive integer"),
    "latent dim above pixels": (["--data", "digits", "--latent-dim", "64"], "latent_dim = 64 is not below"),
    "epochs 0": (["--data", "digits", "--vae-iter", "0"], "vae_epochs must be a positive integer"),
    "sweeps -1": (["--data", "digits", "--gmm-iter", "-1"], "gmm_sweeps must be a positive integer"),
    "batch size 0": (["--data", "digits", "--batch-size", "0"], "batch_size must be a positive integer"),
    "Wishart dof below L - 1": (["--data", "digits", "--latent-dim", "5", "--wishart-dof", "3"], "wishart_dof must exceed"),
    "Dirichlet alpha 0": (["--data", "digits", "--alpha", "0"], "alpha must be a positive"),
    "negative beta": (["--data", "digits", "--beta", "-1"], "beta must be a positive"),
    "NaN learning rate": (["--data", "digits", "--lr", "nan"], "lr must be a positive finite"),
    "absurd learning rate": (["--data", "digits", "--lr", "5"], "far above any useful"),
    "negative KL weight": (["--data", "digits", "--kl-weight", "-1"], "kl_weight must be"),
    "checkpoint every 0": (["--data", "digits", "--checkpoint-every", "0"], "checkpoint_every must be"),
    "threads 0": (["--data", "digits", "--threads", "0"], "--threads must be positive"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_sentence_and_loses_nothing(name, files, previous_run, capsys):
    args, phrase = CASES[name]
    args = [a.replace("{f}", str(files)) for a in args]
    before = _snapshot(previous_run)
    capsys.readouterr()
    # The last flag wins in argparse, so TINY's values never mask the bad one: put TINY first.
    code = main(["train", *TINY, *args, "--out", str(previous_run), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("vaegmm: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert phrase in err
    assert _snapshot(previous_run) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_loses_nothing(previous_run, capsys):
    before = _snapshot(previous_run)
    assert main(["train", *TINY, "--data", "digits", "--device", "cuda", "--out", str(previous_run), "--overwrite"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert _snapshot(previous_run) == before


@pytest.mark.parametrize("damaged", ["iteration_1/vae.pt", "iteration_1/gmm.npz"])
def test_damaged_run_files_are_named(previous_run, tmp_path, capsys, damaged):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(previous_run, copy)
    (copy / damaged).write_bytes(b"\x00garbage")
    capsys.readouterr()
    assert main(["decode", "--run", str(copy), "--iteration", "1", "--cluster", "0", "--out", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err
    assert "damaged or was written by an incompatible version" in err and damaged.split("/")[1] in err
