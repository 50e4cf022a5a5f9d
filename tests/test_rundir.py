"""The run directory: never deleting a run without overwrite, clearing only what a run writes."""

import pytest

from vaegmm.config import TrainConfig
from vaegmm.rundir import RunComplete, RunDirectory, RunError


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
    with pytest.raises(RunError, match="interrupted run of this config; continue it with `vaegmm train --resume"):
        run.start(TrainConfig(seed=2))  # started, no round saved: an interrupted run, kept
    assert (tmp_path / "config.json").exists()


def _finish(run, config):
    """Write the marks of a finished run: every round's files and one metrics row per round."""
    for i in range(config.mutual_iterations):
        (run.path / f"iteration_{i}").mkdir()
        for name in ("vae.pt", "gmm.npz", "history.json"):
            (run.path / f"iteration_{i}" / name).write_bytes(b"x")
    run.save_metrics([{"iteration": i} for i in range(config.mutual_iterations)])


def test_a_finished_run_is_complete_and_an_unfinished_one_interrupted(tmp_path):
    config = TrainConfig(seed=3, mutual_iterations=2)
    run = RunDirectory(tmp_path)
    run.start(config)
    _finish(run, config)
    assert run.is_finished(config)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RunComplete, match="already holds this run, finished"):
        run.start(config)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before

    (tmp_path / "iteration_1" / "history.json").unlink()  # round 1 not saved: interrupted
    assert not run.is_finished(config)
    with pytest.raises(RunError, match="interrupted") as refused:
        run.start(config)
    assert not isinstance(refused.value, RunComplete)
    assert (tmp_path / "iteration_0" / "vae.pt").exists()


def test_run_files_without_config_are_refused(tmp_path):
    (tmp_path / "iteration_0").mkdir()
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(RunError, match="checkpoint.pt, iteration_0.*no config.json"):
        RunDirectory(tmp_path).start(TrainConfig())
    assert (tmp_path / "checkpoint.pt").exists()
    RunDirectory(tmp_path).start(TrainConfig(), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_incomplete_rounds_are_not_listed(tmp_path):
    run = RunDirectory(tmp_path)
    for name in ("vae.pt", "gmm.npz"):  # history.json, written last, is missing
        (tmp_path / "iteration_0").mkdir(exist_ok=True)
        (tmp_path / "iteration_0" / name).write_bytes(b"x")
    assert run.iterations() == []
    with pytest.raises(RunError, match="no completed round"):
        run.load_gmm(0)
