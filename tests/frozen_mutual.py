"""FROZEN: ``vaegmm/mutual.py`` as it was before the engine (its own loop), imports made absolute.
tests/test_modules.py checks that today's ``fit_mutual``, a wiring of the engine, reproduces this
loop bit for bit; do not edit it (except to follow a rename of the primitives it imports).

Mutual learning between the VAE and the GMM (SPEC §2): the loop that passes messages.

One round passes two messages between the two modules of :mod:`vaegmm.modules`::

    VAEModule --latents (N, L)--> GMMModule --PriorMessage (a prior per datum)--> next round's VAEModule

With ``manifold="umap"`` a third module, :class:`vaegmm.manifold.ManifoldModule`, sits between
them: it embeds the latents (UMAP), the GMM clusters the embedding, and it turns the GMM's
responsibilities into each datum's prior in the latent space (SPEC §5).

1. VAE step: a fresh VAE (or the last one, fine-tuned) trained on
   E_q[log p(o_n | x_n)] - kl_weight * KL(q(x_n | o_n) || p_n(x_n)), where round 0 uses
   p_n = N(0, I) and later rounds the GMM's message for datum n (:mod:`vaegmm.messages`).
2. VAE -> GMM: the latents of the clean images.
3. GMM step: ``gmm_sweeps`` blocked Gibbs sweeps (``gmm_chains`` chains, the most likely kept).
4. GMM -> VAE: each datum's prior for the next round (``prior_from``).

This module owns what is not the modules' maths: validation, seeds (one per round, forked, the
caller's global RNG untouched), checkpoints (one schema, :func:`vaegmm.rundir.checkpoint_state`),
resume, the run directory and the log line of each round.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch

from vaegmm.config import TrainConfig
from vaegmm.data import ImageDataset
from vaegmm.distributed import SINGLE
from vaegmm.manifold import ManifoldModule, manifold_seed
from vaegmm.messages import PriorMessage, prior_message, responsibility_moments
from vaegmm.metrics import clustering_metrics, many_to_one_accuracy
from vaegmm.modules import GMMModule, VAEModule, gauss_wishart_prior
# The result types and the checks around the loop are today's (unchanged since); the loop below is frozen.
from vaegmm.mutual import MutualResult, RoundResult, check_data, format_round, resolve_device
from vaegmm.rundir import RunDirectory
from vaegmm.vae import encode, fit_vae

__all__ = ["PriorMessage", "RoundResult", "MutualResult", "fit_mutual", "fit_vae", "encode", "resolve_device",
           "prior_message", "responsibility_moments", "gauss_wishart_prior", "format_round", "check_data"]


def checkpoint_state(config, iteration, epoch, vae_state, vae_seconds=0.0):
    return {"config": config.to_dict(), "iteration": iteration, "epoch": epoch, **vae_state,
            "vae_seconds": vae_seconds}


def _round_seeds(seed, n_rounds):
    """Independent (torch seed, numpy SeedSequence) per round from one integer seed."""
    children = np.random.SeedSequence(seed).spawn(n_rounds)
    return [(int(child.generate_state(1, dtype=np.uint64)[0] >> 1), child) for child in children]


def fit_mutual(
    dataset: ImageDataset,
    config: TrainConfig,
    *,
    run_dir=None,
    shuffle=True,
    progress=True,
    overwrite=False,
    resume=False,
    checkpoint_every=10,
    log: Optional[Callable[[str], None]] = print,
    stop_requested: Optional[Callable[[], bool]] = None,
    distributed=None,
):
    """Run ``config.mutual_iterations`` rounds of VAE + GMM mutual learning on ``dataset``.

    Parameters
    ----------
    dataset : ImageDataset (or, distributed, a :class:`~vaegmm.data.MappedImageDataset`)
    config : TrainConfig
    run_dir : path, default=None
        Where to write the run directory (see :mod:`vaegmm.rundir`); nothing is written if None.
        A directory holding a different run is refused unless ``overwrite``, which deletes
        that run's files first.
    shuffle : bool
        Shuffle the VAE's minibatches every epoch.
    progress : bool
        tqdm bars over epochs and sweeps.
    resume : bool
        Continue the interrupted run in ``run_dir`` from its checkpoint; ``config`` must equal
        the run's saved config. On CPU the result equals that of an uninterrupted run.
    checkpoint_every : int
        Write ``run_dir/checkpoint.pt`` every this many VAE epochs (and after the last epoch
        and every round).
    log : callable or None
        Receives the one-line summary of each round.
    stop_requested : callable, default=None
        Polled after every epoch; when it returns True the loop writes a checkpoint and raises
        KeyboardInterrupt (the CLI sets it from its Ctrl-C handler). The library installs no
        signal handler: without it a Ctrl-C stops at once and the last checkpoint is kept.
    distributed : vaegmm.distributed.Context, default=None
        One rank of a ``torch.distributed`` run (every rank calls ``fit_mutual`` with the same
        arguments): each reads only its shard of the images, trains the VAE data-parallel and
        draws the Gibbs assignments of its shard (:mod:`vaegmm.distributed`). Rank 0 alone writes
        the run directory, logs and shows progress; when resuming it reads the run directory and
        sends the other ranks what they need. Every rank returns the same result.

    Returns
    -------
    MutualResult
    """
    context = distributed if distributed is not None else SINGLE
    if context.active:
        config = config.without_default_manifold()
        if config.manifold != "none":
            raise ValueError(f"manifold = {config.manifold} runs in one process only; train it without torchrun "
                             "(or with manifold none).")
    check_data(dataset, config)
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 1):
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
    device = resolve_device(config.device)
    if context.active and device.type == "cuda":
        device = torch.device(context.device)  # this rank's GPU
    labels = dataset.labels
    n_samples, input_dim = len(dataset), int(np.prod(dataset.image_shape))
    start, stop = context.shard(n_samples)
    images = torch.as_tensor(dataset.rows(start, stop), device=device)  # (N, D), distributed: this rank's shard
    stop_requested = stop_requested or (lambda: False)
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir of the run to continue.")
    run = RunDirectory(run_dir) if run_dir is not None and context.is_main else None  # rank 0 writes
    if not context.is_main:  # rank 0 alone logs and shows progress
        log, progress = None, False
    checkpoint = saved_rounds = None
    if resume and run is not None:
        checkpoint = run.load_checkpoint(config)  # refuses a different config; None: nothing done yet
        done = 0 if checkpoint is None else checkpoint["iteration"]
        if done > 0:  # completed rounds come from the run directory
            saved_rounds = ([_load_round(run, i) for i in range(done)], run.load_prior(done - 1),
                            run.load_vae(done - 1, "cpu")[0])
    elif run is not None:
        run.start(config, overwrite=overwrite)
    if resume:  # rank 0 sends what it read
        checkpoint, saved_rounds = context.broadcast_object((checkpoint, saved_rounds))
    if run is not None and labels is not None:
        run.save_labels(labels)

    vae_module = VAEModule(config, input_dim, dataset.image_shape, device, distributed=context)
    gmm_module = GMMModule(config, labels, device, distributed=context)
    manifold = ManifoldModule(config, device) if config.manifold_used == "umap" else None
    result = MutualResult(config=config, vae=None)
    prior = PriorMessage.standard_normal(n_samples, config.latent_dim, device)
    first_round = 0 if checkpoint is None else checkpoint["iteration"]
    if first_round > 0:
        result.rounds, saved, result.vae = saved_rounds
        result.vae.to(device)
        last = result.rounds[-1]
        prior = (PriorMessage.from_numpy(saved, device) if saved is not None
                 else PriorMessage.from_gmm(last.gmm, last.assignments, config.prior_covariance, device))
    if checkpoint is not None and log is not None:
        where = ("all rounds are done" if first_round == config.mutual_iterations
                 else f"round {first_round}, epoch {checkpoint['epoch']}")
        log(f"resuming {run.path}: {where}")

    seeds = _round_seeds(config.seed, config.mutual_iterations)
    for iteration in range(first_round, config.mutual_iterations):
        torch_seed, numpy_seed = seeds[iteration]
        started = time.perf_counter()
        vae_module.start_round(iteration, torch_seed)
        if checkpoint is not None and checkpoint["iteration"] == iteration:
            vae_module.restore(checkpoint, checkpoint["epoch"])
            started -= checkpoint["vae_seconds"]
            checkpoint = None

        def on_epoch_end(epoch):
            stop = context.any(stop_requested())  # a stop on any rank stops every rank
            if run is not None and (epoch % checkpoint_every == 0 or epoch == vae_module.epochs or stop):
                run.save_checkpoint(checkpoint_state(config, iteration, epoch, vae_module.state(),
                                                     time.perf_counter() - started))
            if stop:
                raise KeyboardInterrupt

        # 1. VAE step against this round's prior; 2. VAE -> GMM: the latents.
        vae_module.fit(images, prior, shuffle=shuffle, on_epoch_end=on_epoch_end, progress=progress,
                       desc=f"round {iteration} VAE")
        vae_seconds = time.perf_counter() - started
        latents = vae_module.encode(images, n_samples)

        # (With a manifold: latents -> embedding, what the GMM clusters.)
        embedding = manifold.forward(latents, manifold_seed(numpy_seed)) if manifold is not None else None

        # 3. GMM step; 4. GMM -> VAE: the prior of the next round (with a manifold: via its backward).
        previous = result.rounds[-1].assignments if config.chain_init == "previous" and result.rounds else None
        gmm_module.fit(latents if manifold is None else embedding, numpy_seed, previous, progress=progress)
        prior = gmm_module.message() if manifold is None else manifold.backward(gmm_module.gmm, embedding, latents)
        gmm, assignments = gmm_module.gmm, gmm_module.gmm.labels_

        seconds = time.perf_counter() - started
        final = clustering_metrics(labels, assignments) if labels is not None else dict.fromkeys(("accuracy", "ari", "nmi"))
        metrics = {"iteration": iteration, **final, "elbo": vae_module.elbo[-1], "seconds": seconds,
                   "vae_seconds": vae_seconds, "gmm_seconds": seconds - vae_seconds}
        if config.finds_k:  # K found: its posterior mode over the chain's last half, and that posterior
            metrics.update(clusters_found=gmm.n_clusters_found_,
                           clusters_found_posterior={str(k): v for k, v in gmm.clusters_found_posterior_.items()},
                           accuracy_many_to_one=(many_to_one_accuracy(labels, assignments) if labels is not None
                                                 else None))
        result.rounds.append(RoundResult(iteration, vae_module.elbo, vae_module.loss, gmm, latents, assignments,
                                         gmm_module.sweeps, metrics, embedding))
        result.vae = vae_module.vae
        if run is not None:
            run.save_round(
                iteration, vae=vae_module.vae, optimizer=vae_module.optimizer, image_shape=dataset.image_shape,
                gmm=gmm, latents=latents, assignments=assignments, prior=prior.to_numpy(),
                history={"elbo": vae_module.elbo, "loss": vae_module.loss, "sweeps": gmm_module.sweeps},
                **({} if manifold is None else {"embedding": embedding, "manifold": manifold.model,
                                                "latent_clusters": manifold.clusters}),
            )
            run.save_metrics(result.metrics())
            # The next round starts from its own seeds; only a warm-started VAE carries over.
            run.save_checkpoint(checkpoint_state(
                config, iteration + 1, 0, vae_module.state(weights=config.vae_init_used == "warm", progress=False)))
        if log is not None:
            log(format_round(metrics))
        if context.any(stop_requested()):
            raise KeyboardInterrupt
    return result


def _load_round(run, iteration):
    """A completed round of a run directory as a RoundResult."""
    history = run.load_history(iteration)
    gmm = run.load_gmm(iteration)
    gmm.labels_ = run.load_array(iteration, "assignments")
    return RoundResult(
        iteration, history["elbo"], history["loss"], gmm, run.load_array(iteration, "latents"),
        gmm.labels_, history["sweeps"], run.load_metrics()[iteration], run.load_embedding(iteration),
    )
