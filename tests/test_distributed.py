"""torch.distributed: counter-based uniforms, collectives, the sharded Gibbs chain, the
data-parallel VAE and a sharded mutual-learning run with resume, on real gloo process groups of
2 (or 3) processes on this machine; and torchrun end to end."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from distributed_workers import (collectives, free_port, game_run, gibbs_chain, multimodal_run,  # noqa: E402
                                 mutual_run, vae_shards)

from vaegmm.distributed import CounterUniforms, counter_uniforms, shard_bounds  # noqa: E402
from vaegmm.gibbs import sample_categorical_columns  # noqa: E402
from vaegmm.gmm import GibbsGMM  # noqa: E402
from vaegmm.metrics import clustering_metrics  # noqa: E402


def spawn(function, world_size, *args):
    mp.spawn(function, args=(world_size, free_port(), *args), nprocs=world_size, join=True)


# -- counter-based uniforms and shards -----------------------------------------------------------
def test_counter_uniforms_do_not_depend_on_the_split():
    whole = counter_uniforms(7, 3, 0, 1000)
    pieces = np.concatenate([counter_uniforms(7, 3, a, b) for a, b in ((0, 1), (1, 400), (400, 1000))])
    np.testing.assert_array_equal(whole, pieces)
    assert not np.array_equal(whole, counter_uniforms(7, 4, 0, 1000))  # another sweep
    assert not np.array_equal(whole, counter_uniforms(8, 3, 0, 1000))  # another seed


def test_counter_uniforms_are_uniform_and_uncorrelated():
    values = np.concatenate([counter_uniforms(seed, sweep, 0, 5000) for seed in (0, 1) for sweep in range(4)])
    assert np.all((values >= 0) & (values < 1))
    assert stats.kstest(values, stats.uniform.cdf).pvalue > 1e-3
    a, b = counter_uniforms(0, 0, 0, 20000), counter_uniforms(0, 1, 0, 20000)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.03  # consecutive sweeps
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.03  # neighbouring data


def test_categorical_draws_with_counter_uniforms_follow_the_probabilities():
    probabilities = np.array([0.5, 0.3, 0.15, 0.05])
    n = 40000
    weighted = np.ascontiguousarray(np.repeat(np.log(probabilities)[:, None], n, axis=1))
    labels, _ = sample_categorical_columns(weighted, CounterUniforms(seed=3, offset=0))
    counts = np.bincount(labels, minlength=4)
    assert stats.chisquare(counts, probabilities * n).pvalue > 1e-3


def test_shards_cover_the_data_once():
    for n, world in ((10, 3), (7, 2), (5, 5), (1000, 8)):
        bounds = [shard_bounds(n, r, world) for r in range(world)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1


# -- real process groups ---------------------------------------------------------------------------
def test_collectives_on_two_gloo_processes(tmp_path):
    spawn(collectives, 2, str(tmp_path / "c"))
    for rank in (0, 1):
        got = np.load(tmp_path / f"c-{rank}.npz")
        np.testing.assert_array_equal(got["gathered"], np.arange(11) * 10)
        np.testing.assert_array_equal(got["total"], [3.0, 3.0, 3.0])
        np.testing.assert_array_equal(got["shared"], [0.0, 0.0])
        assert int(got["obj"]) == 0 and bool(got["anyone"])


@pytest.fixture(scope="module")
def separated():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0], [0.0, 0.0, 8.0]])
    X = np.concatenate([rng.normal(c, 1.0, (150, 3)) for c in centres])
    return X, np.repeat(np.arange(4), 150)


def test_sharded_gibbs_chain_is_the_same_on_one_two_and_three_processes(tmp_path, separated):
    X, truth = separated
    options = dict(n_components=4, n_sweeps=25, random_state=11, init="kmeans++")
    for world in (1, 2, 3):
        spawn(gibbs_chain, world, X, options, str(tmp_path / f"chain{world}.npz"))
    chains = [np.load(tmp_path / f"chain{world}.npz") for world in (1, 2, 3)]
    for other in chains[1:]:
        np.testing.assert_array_equal(chains[0]["sweeps"], other["sweeps"])  # every sweep's assignments
        for key in ("means", "precisions", "weights", "log_likelihood"):
            np.testing.assert_allclose(chains[0][key], other[key], rtol=1e-9, atol=1e-9)
    # The same partition and posterior as the ordinary (unsharded) sampler.
    single = GibbsGMM(**options, n_chains=1).fit(X)
    assert clustering_metrics(truth, chains[1]["labels"])["ari"] == 1.0
    assert clustering_metrics(single.labels_, chains[1]["labels"])["ari"] == 1.0
    order = lambda means: means[np.lexsort(means.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(chains[1]["means"]), order(single.means_), atol=0.3)


def test_data_parallel_vae_uses_global_indices_and_keeps_ranks_in_step(tmp_path):
    spawn(vae_shards, 2, str(tmp_path / "v"))
    first, second = (np.load(tmp_path / f"v-{rank}.npz") for rank in (0, 1))
    np.testing.assert_array_equal(first["weights"], second["weights"])  # DDP: one model
    np.testing.assert_array_equal(first["elbo"], second["elbo"])  # means over all the data, on every rank
    latents = first["latents"]
    assert np.all(latents[:20].mean(axis=0) < -2) and np.all(latents[20:].mean(axis=0) > 2)  # each datum its prior


TINY = dict(data="digits", max_samples=300, mutual_iterations=2, round0_epochs=4, vae_epochs=4, gmm_sweeps=15,
            batch_size=64, latent_dim=4, hidden_dims=(32,), gmm_prior="data", seed=3)


def test_two_process_run_resumes_to_the_uninterrupted_result(tmp_path):
    spawn(mutual_run, 2, str(tmp_path / "whole"), TINY, None, False, str(tmp_path / "whole"))
    # Polls: round 0's 4 epochs, before its GMM step, its end; before round 1's VAE, its first epoch: the 8th stops.
    spawn(mutual_run, 2, str(tmp_path / "cut"), TINY, 7, False, str(tmp_path / "cut"))  # stops in round 1
    assert bool(np.load(tmp_path / "cut-0.npz")["interrupted"]) and bool(np.load(tmp_path / "cut-1.npz")["interrupted"])
    checkpoint = (tmp_path / "cut" / "checkpoint.pt")
    assert checkpoint.exists() and (tmp_path / "cut" / "iteration_0").exists()
    shutil.copytree(tmp_path / "cut", tmp_path / "cut-on-one")
    spawn(mutual_run, 2, str(tmp_path / "cut"), TINY, None, True, str(tmp_path / "resumed"))
    whole, resumed = np.load(tmp_path / "whole-0.npz"), np.load(tmp_path / "resumed-0.npz")
    assert "embedding" not in whole  # under torchrun the default manifold is none
    for key in ("latents", "assignments", "elbo", "accuracy"):
        np.testing.assert_array_equal(whole[key], resumed[key])
    other = np.load(tmp_path / "resumed-1.npz")
    np.testing.assert_array_equal(resumed["assignments"], other["assignments"])  # every rank, one result
    metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert [m["iteration"] for m in metrics["iterations"]] == [0, 1]
    # Another number of processes resumes too: round 0 is read back, round 1 goes on from the
    # 2-process checkpoint (other per-rank noise, so close to the uninterrupted run, not equal).
    spawn(mutual_run, 1, str(tmp_path / "cut-on-one"), TINY, None, True, str(tmp_path / "on-one"))
    on_one = np.load(tmp_path / "on-one-0.npz")
    assert not bool(on_one["interrupted"]) and on_one["accuracy"][0] == whole["accuracy"][0]
    assert on_one["elbo"][0] == whole["elbo"][0]  # round 1's first epoch, done before the stop
    assert abs(on_one["elbo"][-1] - whole["elbo"][-1]) < 0.05 * abs(whole["elbo"][-1])
    metrics = json.loads((tmp_path / "cut-on-one" / "metrics.json").read_text())
    assert [m["iteration"] for m in metrics["iterations"]] == [0, 1]


def test_two_process_run_with_the_manifold_resumes_to_the_uninterrupted_result(tmp_path):
    """manifold umap under torchrun: rank 0 fits UMAP and sends the embedding, so every rank's GMM
    clusters the same embedding and returns the same result; a stop and a resume change nothing."""
    options = {**TINY, "manifold": "umap", "manifold_dim": 3, "manifold_neighbors": 10}
    spawn(mutual_run, 2, str(tmp_path / "whole"), options, None, False, str(tmp_path / "whole"))
    whole, other = np.load(tmp_path / "whole-0.npz"), np.load(tmp_path / "whole-1.npz")
    assert whole["embedding"].shape == (300, 3)
    for key in ("embedding", "assignments", "latents"):
        np.testing.assert_array_equal(whole[key], other[key])
    assert len(np.unique(whole["assignments"])) > 1
    assert (tmp_path / "whole" / "iteration_1" / "manifold.pkl").exists()
    spawn(mutual_run, 2, str(tmp_path / "cut"), options, 8, False, str(tmp_path / "cut"))
    assert bool(np.load(tmp_path / "cut-0.npz")["interrupted"])
    spawn(mutual_run, 2, str(tmp_path / "cut"), options, None, True, str(tmp_path / "resumed"))
    resumed = np.load(tmp_path / "resumed-0.npz")
    for key in ("embedding", "latents", "assignments", "elbo", "accuracy"):
        np.testing.assert_array_equal(whole[key], resumed[key])


@pytest.mark.parametrize("manifold", ["none", "umap"])
def test_two_process_multimodal_run_agrees_across_ranks_and_resumes(tmp_path, manifold):
    """Multimodal categories under torchrun: each VAE data-parallel, the joint GMM's sweeps sharded
    (block-diagonal categories), UMAP on rank 0 with the manifold; one result on every rank, and a
    run stopped inside its second round resumes to the uninterrupted result."""
    options = dict(mutual_iterations=2, round0_epochs=2, vae_epochs=2, gmm_sweeps=6, gmm_chains=2, latent_dim=3,
                   hidden_dims=(16,), batch_size=32, seed=2, manifold=manifold, manifold_dim=3, manifold_neighbors=10)
    spawn(multimodal_run, 2, str(tmp_path / "whole"), options, None, False, str(tmp_path / "whole"))
    whole, other = np.load(tmp_path / "whole-0.npz"), np.load(tmp_path / "whole-1.npz")
    keys = ["assignments", "latents_0", "latents_1"] + (["embedding"] if manifold == "umap" else [])
    for key in keys:
        np.testing.assert_array_equal(whole[key], other[key])
    assert whole["latents_0"].shape == (160, 3) and len(np.unique(whole["assignments"])) > 1
    assert ("embedding" in whole) == (manifold == "umap")
    assert (tmp_path / "whole" / "round_1" / "gmm" / "gmm.npz").exists()
    # Polls: round 0's 2 + 2 epochs and before each of its steps but the first, the same in round 1: stop there.
    spawn(multimodal_run, 2, str(tmp_path / "cut"), options, 8, False, str(tmp_path / "cut"))
    assert bool(np.load(tmp_path / "cut-0.npz")["interrupted"]) and bool(np.load(tmp_path / "cut-1.npz")["interrupted"])
    assert (tmp_path / "cut" / "round_0").exists() and not (tmp_path / "cut" / "round_1").exists()
    spawn(multimodal_run, 2, str(tmp_path / "cut"), options, None, True, str(tmp_path / "resumed"))
    resumed = np.load(tmp_path / "resumed-0.npz")
    for key in keys + ["accuracy"]:
        np.testing.assert_array_equal(whole[key], resumed[key])


@pytest.mark.parametrize("manifold", ["none", "umap"])
def test_two_process_naming_game_agrees_across_ranks_and_resumes(tmp_path, manifold):
    """The naming game under torchrun: the agents' VAEs data-parallel, UMAP and the game's turns on
    rank 0 (its outbox sent to rank 1); one result on every rank; a game stopped in its second
    round resumes to the uninterrupted game."""
    options = dict(mutual_iterations=2, round0_epochs=2, vae_epochs=2, gmm_sweeps=4, gmm_chains=1, latent_dim=3,
                   hidden_dims=(16,), batch_size=32, seed=4, manifold=manifold, manifold_dim=3, manifold_neighbors=10)
    spawn(game_run, 2, str(tmp_path / "whole"), options, None, False, str(tmp_path / "whole"))
    whole, other = np.load(tmp_path / "whole-0.npz"), np.load(tmp_path / "whole-1.npz")
    keys = ["signs_a", "signs_b", "latents_a", "latents_b", "kappa"] + (["embedding"] if manifold == "umap" else [])
    for key in keys:
        np.testing.assert_array_equal(whole[key], other[key])
    assert ("embedding" in whole) == (manifold == "umap")
    assert (tmp_path / "whole" / "agent_b" / "iteration_1").exists()
    # Polls: round 0's two VAEs (2 epochs each), before each later step, the same in round 1: stop in it.
    spawn(game_run, 2, str(tmp_path / "cut"), options, 9, False, str(tmp_path / "cut"))
    assert bool(np.load(tmp_path / "cut-0.npz")["interrupted"]) and bool(np.load(tmp_path / "cut-1.npz")["interrupted"])
    assert not (tmp_path / "cut" / "agent_a" / "iteration_1").exists()
    spawn(game_run, 2, str(tmp_path / "cut"), options, None, True, str(tmp_path / "resumed"))
    resumed = np.load(tmp_path / "resumed-0.npz")
    for key in keys:
        np.testing.assert_array_equal(whole[key], resumed[key])


def test_exit_process_flushes_and_keeps_the_exit_code():
    script = "import sys\nfrom vaegmm.distributed import exit_process\nprint('said', end='')\n" \
             "print('warned', end='', file=sys.stderr)\nexit_process(3)\nprint('never')"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (3, "said", "warned")


def test_torchrun_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
               str(free_port()), "-m", "vaegmm", "train", "--data", "digits", "--max-samples", "200",
               "--mutual-iterations", "2", "--round0-epochs", "2", "--vae-iter", "2", "--gmm-iter", "5",
               "--latent-dim", "4", "--out", str(out), "--quiet", "--no-figures", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    errors = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("W"))  # torchrun's warnings
    assert done.returncode == 0, errors[:1500] + "\n...\n" + errors[-1500:]
    assert done.stdout.count("data: digits, 200 images") == 1  # rank 0 alone speaks
    assert "2 processes" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["iteration"] for m in metrics["iterations"]] == [0, 1]
    assert (out / "iteration_1" / "latents.npy").exists() or any((out / "iteration_1").iterdir())


def test_torchrun_multimodal_train_end_to_end_and_again(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
               str(free_port()), "-m", "vaegmm", "train", "--data", "mnist5k-rotated", "--max-samples", "120",
               "--round0-epochs", "1", "--vae-iter", "1", "--gmm-iter", "4", "--latent-dim", "3", "--out", str(out),
               "--quiet", "--no-figures", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    errors = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("W"))
    assert done.returncode == 0, errors[:1500] + "\n...\n" + errors[-1500:]
    assert done.stdout.count("2 modalities of 120 paired rows") == 1 and "2 processes" in done.stdout
    assert [r["round"] for r in json.loads((out / "metrics.json").read_text())["rounds"]] == [0, 1]
    again = subprocess.run(command[:5] + [str(free_port())] + command[6:], capture_output=True, text=True, env=env,
                           timeout=300)
    assert again.returncode == 0 and again.stdout.count("already holds this run, finished") == 1  # every rank stops


# -- memory-mapped shards ------------------------------------------------------------------------
def _write_idx(path, array, code):
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_mapped_npy_and_idx_read_only_the_rows_asked_for(tmp_path):
    from vaegmm.data import MappedImageDataset, load_dataset, open_mapped

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(9, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=9).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    _write_idx(tmp_path / "train-images-idx3-ubyte", images, 0x08)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, 0x08)
    for name in ("x.npy", "train-images-idx3-ubyte"):
        mapped = open_mapped(tmp_path / name)
        assert isinstance(mapped, MappedImageDataset) and isinstance(mapped.images, np.memmap)
        assert len(mapped) == 9 and mapped.image_shape == (5, 4)
        whole = load_dataset(tmp_path / name)
        np.testing.assert_allclose(mapped.rows(3, 7), whole.flat()[3:7], rtol=1e-6)
        np.testing.assert_allclose(mapped.flat(), whole.flat(), rtol=1e-6)
    np.testing.assert_array_equal(open_mapped(tmp_path / "train-images-idx3-ubyte").labels, labels)
    assert open_mapped("mnist5k") is None and open_mapped(tmp_path) is None  # read whole instead


def test_mapped_rows_outside_the_range_name_the_rows(tmp_path):
    from vaegmm.data import DataError, open_mapped

    images = np.zeros((4, 3, 3), dtype=np.float32)
    images[2, 0, 0] = 7.0  # floats must already be in [0, 1]
    np.save(tmp_path / "x.npy", images)
    mapped = open_mapped(tmp_path / "x.npy")
    mapped.rows(0, 2)
    with pytest.raises(DataError, match="images 2..3"):
        mapped.rows(2, 4)
