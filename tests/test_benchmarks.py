"""The benchmark suite runs (a smoke run: it checks the table's shape, never a timing)."""

import json

from benchmarks.__main__ import main


def test_quick_benchmark_writes_every_column(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--repeats", "1", "--reference-max-n", "1000", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_count"] >= 1
    rows = {row["n_samples"]: row for row in report["gibbs"]}
    assert set(rows) == {1000, 10000}
    for row in rows.values():
        assert row["sweep_ms"] > 0 and row["peak_mib"] > 0 and row["sklearn_ms"] > 0
    assert rows[1000]["reference_ms"] > 0 and "reference_ms" not in rows[10000]
    assert "| N | K | L |" in capsys.readouterr().out


def test_auto_k_benchmark_times_both_sweeps():
    from benchmarks.auto_k import run

    row = run(n_samples=2000, repeats=1)
    assert row["auto_sweep_ms"] > 0 and row["finite_sweep_ms"] > 0 and row["ratio"] > 0


def test_distributed_benchmark_prints_its_table(capsys):
    from benchmarks.distributed import main as distributed_main

    distributed_main(["--sizes", "3000", "--processes", "1,2", "--batches", "256"])
    table = capsys.readouterr().out
    assert table.count("| Gibbs sweep | 3,000 |") == 2 and table.count("| VAE epoch | 3,000 |") == 3
    assert "bytes per Gibbs sweep" in table


def test_threads_benchmark_times_the_em_start_quiet_and_busy():
    from benchmarks.threads import run

    rows = run(n_samples=1000, repeats=1, busy_threads=1)
    assert [row["call"] for row in rows] == ["GibbsGMM EM start (thread limit)", "EM without a thread limit"]
    for row in rows:
        assert row["quiet_s"] > 0 and row["busy_s"] > 0 and row["ratio"] == row["busy_s"] / row["quiet_s"]


def test_manifold_benchmark_times_each_stage_against_the_defaults(capsys):
    from benchmarks.manifold import main as manifold_main

    assert manifold_main(["--data", "digits", "--max-samples", "200", "--epochs", "1"]) == 0
    table = capsys.readouterr().out
    assert "| --manifold none |" in table and "| defaults (umap) |" in table and "round 1: (UMAP +) GMM (s)" in table
    assert "| defaults, --architecture conv |" in table
    assert "| 1.00× |" in table  # --manifold none against itself
