"""The run directory: refusing to clobber a different run, clearing only what a run writes."""

import pytest

from vaegmm.config import TrainConfig
from vaegmm.rundir import RunDirectory, RunError


def test_start_refuses_a_different_run_and_clears_only_run_files(tmp_path):
    run = RunDirectory(tmp_path)
    run.start(TrainConfig(seed=1))
    (tmp_path / "iteration_0").mkdir()
    (tmp_path / "iteration_0" / "history.json").write_text("{}")
    (tmp_path / "figures").mkdir()
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")

    with pytest.raises(RunError, match="already holds a different run"):
        run.start(TrainConfig(seed=2))
    assert (tmp_path / "iteration_0" / "history.json").exists()  # nothing lost by the refusal

    run.start(TrainConfig(seed=2), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "notes.txt"]
    assert run.load_config() == TrainConfig(seed=2)
    run.start(TrainConfig(seed=2))  # the same run again is allowed


def test_incomplete_rounds_are_not_listed(tmp_path):
    run = RunDirectory(tmp_path)
    for name in ("vae.pt", "gmm.npz"):  # history.json, written last, is missing
        (tmp_path / "iteration_0").mkdir(exist_ok=True)
        (tmp_path / "iteration_0" / name).write_bytes(b"x")
    assert run.iterations() == []
    with pytest.raises(RunError, match="no completed round"):
        run.load_gmm(0)
