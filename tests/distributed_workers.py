"""Worker functions of tests/test_distributed.py, importable by spawned processes."""

import os
import socket

import numpy as np


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join(rank, world_size, port):
    """Set torchrun's environment for this process and join the gloo group."""
    import torch

    from vaegmm.distributed import from_environment

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    return from_environment("cpu")


def gibbs_chain(rank, world_size, port, X, gmm_options, out):
    """Fit a sharded GibbsGMM; rank 0 saves labels, parameters and the per-sweep labels."""
    from vaegmm.distributed import exit_process, shutdown
    from vaegmm.gmm import GibbsGMM

    context = join(rank, world_size, port)
    record = []
    gmm = GibbsGMM(**gmm_options, distributed=context, callback=lambda sweep, labels, model: record.append(labels), n_chains=1)
    gmm.fit(X)
    if context.is_main:
        np.savez(out, labels=gmm.labels_, means=gmm.means_, precisions=gmm.precisions_, weights=gmm.weights_,
                 log_likelihood=gmm.log_likelihood_, sweeps=np.array(record))
    shutdown(context)
    exit_process(0)


def collectives(rank, world_size, port, out):
    from vaegmm.distributed import exit_process, shutdown

    context = join(rank, world_size, port)
    start, stop = context.shard(11)
    gathered = context.all_gather_rows(np.arange(start, stop) * 10, 11)
    total = context.all_reduce_sum(np.full(3, rank + 1.0))
    shared = context.broadcast(np.full(2, float(rank)))
    obj = context.broadcast_object({"rank": rank})
    anyone = context.any(rank == world_size - 1)
    np.savez(f"{out}-{rank}", gathered=gathered, total=total, shared=shared, obj=obj["rank"], anyone=anyone)
    shutdown(context)
    exit_process(0)


def vae_shards(rank, world_size, port, out):
    """DDP fit against per-datum priors at -4 (first half of the data) and +4 (second half)."""
    import torch

    from vaegmm.distributed import exit_process, shutdown
    from vaegmm.messages import PriorMessage
    from vaegmm.vae import VAE, encode, fit_vae

    context = join(rank, world_size, port)
    rng = np.random.default_rng(0)
    images = torch.as_tensor(rng.random((40, 16)) < 0.3, dtype=torch.float32)
    mean = torch.full((40, 2), -4.0)
    mean[20:] = 4.0
    prior = PriorMessage(mean, var=torch.full((40, 2), 0.1))
    torch.manual_seed(rank)  # different initial weights: DDP must start every rank from rank 0's
    vae = VAE(16, 2, (8,))
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-2)
    start, stop = context.shard(40)
    elbo, _ = fit_vae(vae, optimizer, images[start:stop], prior, epochs=60, batch_size=8, progress=False,
                      generator=torch.Generator().manual_seed(rank), distributed=context)
    latents = context.all_gather_rows(encode(vae, images[start:stop]), 40)
    weights = torch.cat([p.detach().ravel() for p in vae.parameters()]).numpy()
    np.savez(f"{out}-{rank}", latents=latents, weights=weights, elbo=np.array(elbo))
    shutdown(context)
    exit_process(0)


def stopper(rank, stop_after):
    """A ``stop_requested`` that asks for a stop on rank 0 only, at its poll ``stop_after`` + 1
    (never with None): a Ctrl-C that reached one process."""
    calls = []

    def stop_requested():
        calls.append(1)
        return rank == 0 and stop_after is not None and len(calls) > stop_after

    return stop_requested


def save_outcome(context, out, fit, record):
    """Run ``fit()``; save ``{out}-{rank}.npz``: interrupted, and on success ``record(result)``;
    leave the group and end the process."""
    from vaegmm.distributed import exit_process, shutdown

    try:
        result = fit()
    except KeyboardInterrupt:
        np.savez(f"{out}-{context.rank}", interrupted=True)
    else:
        np.savez(f"{out}-{context.rank}", interrupted=False, **record(result))
    finally:
        shutdown(context)
    exit_process(0)


def mutual_run(rank, world_size, port, run_dir, options, stop_after, resume, out):
    """fit_mutual on 300 digits; with ``stop_after`` epochs, a Ctrl-C-like stop on rank 0 only."""
    from vaegmm.config import TrainConfig
    from vaegmm.data import load_dataset
    from vaegmm.mutual import fit_mutual

    context = join(rank, world_size, port)
    config = TrainConfig(**options)
    dataset = load_dataset(config.data, max_samples=config.max_samples, seed=config.seed)

    def record(result):
        last = result.rounds[-1]
        return dict(latents=last.latents, assignments=last.assignments, elbo=np.array(last.elbo),
                    accuracy=[r.metrics["accuracy"] for r in result.rounds],
                    **({} if last.embedding is None else {"embedding": last.embedding}))

    save_outcome(context, out, lambda: fit_mutual(
        dataset, config, run_dir=run_dir, progress=False, log=None, resume=resume, checkpoint_every=2,
        stop_requested=stopper(rank, stop_after), distributed=context), record)


def multimodal_run(rank, world_size, port, run_dir, options, stop_after, resume, out):
    """fit_multimodal on 160 pairs of mnist5k-rotated; with ``stop_after`` polls, a stop on rank 0 only."""
    from vaegmm.config import TrainConfig
    from vaegmm.multimodal import fit_multimodal, load_views

    context = join(rank, world_size, port)
    views, labels = load_views(["mnist5k-rotated"], max_samples=160, seed=0)

    def record(result):
        last = result.engine.outboxes[-1]
        return dict(assignments=result.assignments, latents_0=result.latents[0], latents_1=result.latents[1],
                    accuracy=[r["accuracy"] for r in result.rounds],
                    **({"embedding": last["manifold"]["embedding"]} if "manifold" in last else {}))

    save_outcome(context, out, lambda: fit_multimodal(
        views, TrainConfig(**options), labels=labels, run_dir=run_dir, resume=resume, progress=False, log=None,
        stop_requested=stopper(rank, stop_after), distributed=context), record)


def game_run(rank, world_size, port, run_dir, options, stop_after, resume, out):
    """fit_naming_game on 160 digits; with ``stop_after`` polls, a stop on rank 0 only."""
    from vaegmm.config import TrainConfig
    from vaegmm.data import load_dataset
    from vaegmm.naming_game import fit_naming_game

    context = join(rank, world_size, port)
    dataset = load_dataset("mnist5k", max_samples=160, seed=0)

    def record(result):
        last = result.engine.outboxes[-1]
        return dict(signs_a=last["game"]["signs_a"], signs_b=last["game"]["signs_b"],
                    latents_a=last["agent_a"]["latents"], latents_b=last["agent_b"]["latents"],
                    kappa=[r["kappa"] for r in result.iterations],
                    **({"embedding": last["agent_a_manifold"]["embedding"]} if "agent_a_manifold" in last else {}))

    save_outcome(context, out, lambda: fit_naming_game(
        dataset, TrainConfig(**options), run_dir=run_dir, resume=resume, progress=False, log=None,
        stop_requested=stopper(rank, stop_after), distributed=context), record)
