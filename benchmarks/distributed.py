"""Throughput on 1 and 2 processes with torch.distributed (gloo).

    python -m benchmarks.distributed                  # N = 60k and 200k; prints a Markdown table
    python -m benchmarks.distributed --sizes 20000 --processes 1,2,4

For every N and P, P processes (one thread each) are spawned on this machine and join one gloo
group, as under ``torchrun``:

- **Gibbs sweep**: ``GibbsGMM(10, distributed=...)`` on synthetic latents (L = 12, 10 clusters),
  seconds per sweep from fits of 5 and 25 sweeps (their difference over 20), so the start is not
  counted; per sweep every rank sends K (1 + L + L^2) + 1 numbers (the sufficient statistics and
  the log-likelihood, all-reduced) and rank 0 broadcasts K (1 + L + 2 L^2) (the parameters).
- **VAE epoch**: ``fit_vae`` with DDP on random 28x28 images (MLP 784-256-12, a per-datum
  prior), seconds per epoch from fits of 1 and 3 epochs (after a warm-up fit; the shortest of 2 each); per step DDP all-reduces the gradient,
  one number per weight. Rows are per batch *per process*: 256 and 1024, each against one
  process with that batch (``--batch-size`` P x 256 or P x 1024 on P processes: a step sees more
  data), and 256 / P (``--batch-size 256`` on P processes: the same steps as one process).

The ratio is P processes' throughput over one process's, measured in the same command. The
last lines project the communication per sweep and per step to 8 GPUs and 4 nodes.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

import numpy as np
import torch
import torch.multiprocessing as mp

N_FEATURES, N_CLUSTERS, BATCH = 12, 10, 256


def _port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, world_size, port, what, n_samples, out, batch=BATCH):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    from vaegmm.distributed import exit_process, from_environment, shutdown
    from vaegmm.threads import limit_threads

    context = from_environment("cpu")
    with limit_threads(1):
        seconds = _gibbs(context, n_samples) if what == "gibbs" else _vae(context, n_samples, batch)
    if context.is_main:
        np.save(out, np.array([seconds]))
    shutdown(context)
    exit_process(0)


def _timed(context, function):
    context.barrier()
    start = time.perf_counter()
    function()
    context.barrier()
    return time.perf_counter() - start


def _gibbs(context, n_samples):
    from vaegmm.gmm import GibbsGMM

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=6.0, size=(N_CLUSTERS, N_FEATURES))
    X = centres[rng.integers(N_CLUSTERS, size=n_samples)] + rng.normal(size=(n_samples, N_FEATURES))
    fit = lambda sweeps: GibbsGMM(N_CLUSTERS, n_sweeps=sweeps, init="kmeans++", random_state=0, n_chains=1,  # noqa: E731
                                  distributed=context).fit(X)
    short = min(_timed(context, lambda: fit(5)) for _ in range(2))
    long = min(_timed(context, lambda: fit(25)) for _ in range(2))
    return max(long - short, 0.0) / 20


def _vae(context, n_samples, batch):
    from vaegmm.messages import PriorMessage
    from vaegmm.vae import VAE, fit_vae

    start, stop = context.shard(n_samples)
    generator = torch.Generator().manual_seed(context.rank)
    images = (torch.rand((stop - start, 784), generator=generator) < 0.2).float()
    prior = PriorMessage.standard_normal(n_samples, N_FEATURES, "cpu")

    def fit(epochs):
        torch.manual_seed(0)
        vae = VAE(784, N_FEATURES, (256,))
        fit_vae(vae, torch.optim.Adam(vae.parameters(), 1e-3), images, prior, epochs=epochs,
                batch_size=batch * context.world_size,  # batch_size is the batch of all ranks together
                generator=generator, progress=False, distributed=context)

    fit(1)  # warm-up: the first fit of a process is slower
    short = min(_timed(context, lambda: fit(1)) for _ in range(2))
    long = min(_timed(context, lambda: fit(3)) for _ in range(2))
    return max(long - short, 0.0) / 2


def measure(what, n_samples, world_size, batch=BATCH):
    """Seconds per sweep ("gibbs") or per epoch ("vae", ``batch`` per process) on ``world_size`` processes."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "seconds.npy")
        mp.spawn(_worker, args=(world_size, _port(), what, n_samples, out, batch), nprocs=world_size, join=True)
        return float(np.load(out)[0])


def projection():
    """Communication per Gibbs sweep and per VAE step, and what it costs at a given bandwidth."""
    K, L = N_CLUSTERS, N_FEATURES
    sweep = 8 * (K * (1 + L + L * L) + 1 + K * (1 + L + 2 * L * L))  # all-reduce + broadcast, float64
    weights = sum(p.numel() for p in __import__("vaegmm.vae", fromlist=["VAE"]).VAE(784, L, (256,)).parameters())
    step = 4 * weights  # float32 gradient all-reduce
    return sweep, step, weights


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="60000,200000", help="comma-separated N")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (the first is the reference)")
    parser.add_argument("--batches", default="256,1024", help="VAE batch sizes per process (the first: the default)")
    parser.add_argument("--skip-vae", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    worlds = [int(p) for p in args.processes.split(",")]
    print(f"{os.cpu_count()} CPU cores; every process one thread; gloo on localhost\n")
    print("| step | N | processes | batch per process | seconds | throughput (data/s) | ratio to 1 process |")
    print("|---|---|---|---|---|---|---|")
    batches = [int(b) for b in args.batches.split(",")]
    for n in sizes:
        reference = None
        for world in worlds:
            seconds = measure("gibbs", n, world)
            reference = reference or seconds
            print(f"| Gibbs sweep | {n:,} | {world} | — | {seconds:.4f} per sweep | {n / seconds:,.0f} | "
                  f"{reference / seconds:.2f}x |", flush=True)
    for n in [] if args.skip_vae else sizes:
        for batch in batches:  # the same batch per process; then, for the first, one process's steps
            reference = None
            runs = [(world, batch) for world in worlds]
            if batch == batches[0]:
                runs += [(world, batch // world) for world in worlds if world > 1]
            for world, per_process in runs:
                seconds = measure("vae", n, world, per_process)
                reference = reference or seconds
                print(f"| VAE epoch | {n:,} | {world} | {per_process} | {seconds:.4f} per epoch | {n / seconds:,.0f} | "
                      f"{reference / seconds:.2f}x |", flush=True)
    sweep, step, weights = projection()
    print(f"\nCommunication: {sweep:,} bytes per Gibbs sweep (K = {N_CLUSTERS}, L = {N_FEATURES}; all-reduce of "
          f"K(1 + L + L^2) + 1 float64, broadcast of K(1 + L + 2L^2)), whatever N; "
          f"{step / 1e6:.2f} MB per VAE step ({weights:,} float32 gradients, ring all-reduce sends about 2x that).")


if __name__ == "__main__":
    main()
