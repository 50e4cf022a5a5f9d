"""studies/accuracy.py: runs variants over seeds, skips what is done, ranks by mean − std."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "accuracy.py"


@pytest.fixture
def study(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("accuracy_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results.jsonl")
    return module


def test_study_runs_skips_done_runs_and_ranks_by_mean_minus_std(study, capsys):
    tiny = ("tiny:data=digits,max_samples=200,vae_epochs=2,gmm_sweeps=3,latent_dim=3,n_clusters=4,"
            "hidden_dims=[16],device=cpu,gmm_init=kmeans++")
    study.main(["run", tiny, "--seeds", "0,1", "--jobs", "1", "--apart"])
    rows = [json.loads(line) for line in study.RESULTS.read_text().splitlines()]
    assert sorted((r["seed"], r["baseline"]) for r in rows) == [(0, "apart"), (0, "mutual"), (1, "apart"), (1, "mutual")]
    assert all(len(r["rounds"]) == (2 if r["baseline"] == "mutual" else 1) for r in rows)
    assert rows[0]["overrides"]["hidden_dims"] == [16]

    study.main(["run", tiny, "--seeds", "0-1", "--jobs", "1", "--apart"])  # all done: nothing trained
    assert len(study.RESULTS.read_text().splitlines()) == 4
    assert "0 runs" in capsys.readouterr().out

    study.main(["table", "--sort"])
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith("| tiny | data=digits") and len(table) == 3
    mutual = [r["rounds"][-1]["accuracy"] for r in rows if r["baseline"] == "mutual"]
    mean = sum(mutual) / 2
    std = (sum((a - mean) ** 2 for a in mutual)) ** 0.5  # ddof=1 with two seeds
    assert f"| {mean - std:.3f} |" in table[2]


def test_unknown_variant_is_refused(study):
    with pytest.raises(SystemExit, match="Unknown variant 'nope'"):
        study.main(["run", "nope"])
