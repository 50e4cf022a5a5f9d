"""Mutual learning between the VAE and the GMM (SPEC §2): a wiring of the engine (:mod:`vaegmm.engine`).

One round passes two messages between two modules of :mod:`vaegmm.modules`::

    VAEStep "vae" --latents (N, L)--> GMMStep "gmm" --PriorMessage (a prior per datum)--> next round's "vae"

With ``manifold="umap"`` a third module, :class:`vaegmm.manifold.Embed`, sits between them: it
embeds the latents (UMAP), the GMM clusters the embedding, and the GMM's responsibilities come
back as each datum's prior in the latent space (SPEC §5).

1. VAE step: a fresh VAE (or the last one, fine-tuned) trained on
   E_q[log p(o_n | x_n)] - kl_weight * KL(q(x_n | o_n) || p_n(x_n)), where round 0 uses
   p_n = N(0, I) and later rounds the GMM's message for datum n (:mod:`vaegmm.messages`).
2. VAE -> GMM: the latents of the clean images.
3. GMM step: ``gmm_sweeps`` blocked Gibbs sweeps (``gmm_chains`` chains, the most likely kept).
4. GMM -> VAE: each datum's prior for the next round (``prior_from``).

This module holds the wiring (:func:`mutual_graph`), the seeds (:func:`round_seeds`: one per
round, shared by the modules; the caller's global RNG untouched), the scores of a round (labels
reach only the observer) and the run directory's layout (:class:`RunWriter`); the engine runs
it: checkpoints inside the VAE's epochs and after every step, resume, the stop, the log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
import torch

from .config import TrainConfig
from .data import ImageDataset
from .distributed import SINGLE
from .engine import Graph
from .engine import run as run_graph
from .gmm import GibbsGMM
from .manifold import Embed, import_umap
from .messages import PriorMessage, prior_message, responsibility_moments
from .metrics import clustering_metrics, many_to_one_accuracy
from .modules import GMMStep, VAEStep, gauss_wishart_prior
from .rundir import RunDirectory
from .vae import VAE, encode, fit_vae

__all__ = ["PriorMessage", "RoundResult", "MutualResult", "fit_mutual", "mutual_graph", "round_seeds", "RunWriter",
           "fit_vae", "encode", "resolve_device", "prior_message", "responsibility_moments", "gauss_wishart_prior", "format_round", "check_data"]


@dataclass
class RoundResult:
    iteration: int
    elbo: List[float]  # mean ELBO per datum, per epoch (KL weight 1)
    loss: List[float]  # training loss per datum, per epoch (KL weight as configured)
    gmm: GibbsGMM
    latents: np.ndarray  # (N, L)
    assignments: np.ndarray  # (N,)
    sweeps: dict  # per-sweep lists: log_likelihood, and accuracy/ari/nmi when labels exist
    metrics: dict  # the reported state's accuracy/ari/nmi (None without labels), elbo, seconds
    embedding: Optional[np.ndarray] = None  # (N, d) with manifold="umap": what the GMM clustered


@dataclass
class MutualResult:
    config: TrainConfig
    vae: Optional[VAE]
    rounds: List[RoundResult] = field(default_factory=list)

    @property
    def gmm(self):
        return self.rounds[-1].gmm

    def metrics(self):
        return [r.metrics for r in self.rounds]


def resolve_device(name):
    """torch.device for "auto", "cpu", "cuda" or "cuda:N"; a clear error if CUDA is missing."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = cuda was asked for but CUDA is not available here; use device = cpu.")
    return device


def check_data(dataset, config):
    """Raise ValueError, naming the config field to change, if ``dataset`` cannot be fitted with ``config``
    (too few images for the clusters or the manifold, a latent dimension too large, umap-learn missing)."""
    if len(dataset) < config.cluster_slots:
        raise ValueError(
            f"The data hold {len(dataset)} images but {config.cluster_slots} clusters were asked for; "
            f"use fewer clusters ({'max_clusters' if config.finds_k else 'n_clusters'}) or more data."
        )
    needed = max(config.manifold_neighbors, config.manifold_dim + 1)
    if config.manifold_used != "none" and len(dataset) <= needed:
        raise ValueError(
            f"The data hold {len(dataset)} images but manifold = {config.manifold_used}"
            f"{' (the default)' if config.manifold is None else ''} with manifold_neighbors = "
            f"{config.manifold_neighbors} and manifold_dim = {config.manifold_dim} needs more than {needed}; "
            "use more data, smaller manifold_neighbors and manifold_dim, or manifold none."
        )
    if config.manifold_used == "umap":
        import_umap()  # a missing package is named now, not after round 0's VAE has trained
    pixels = int(np.prod(dataset.image_shape))
    if config.latent_dim >= pixels:
        raise ValueError(
            f"latent_dim = {config.latent_dim} is not below the {pixels} pixels of an image; "
            "an autoencoder needs a smaller latent dimension (latent_dim)."
        )


def round_seeds(seed, rounds, n_modules):
    """The seeds of a single-modality run: per round one ``SeedSequence`` child of ``seed``,
    shared by its modules (the VAE takes a torch seed from it, UMAP a child key, the GMM's chains
    its spawn), as the loop before the engine drew them."""
    return [[child] * n_modules for child in np.random.SeedSequence(seed).spawn(rounds)]


def mutual_graph(dataset, config, device, *, distributed=None, shuffle=True, checkpoint_every=None):
    """The graph of :func:`fit_mutual`: ``vae`` -> (``manifold`` ->) ``gmm`` -> ``vae``."""
    graph = Graph()
    graph.add(VAEStep("vae", dataset, config, device, distributed=distributed, shuffle=shuffle,
                      checkpoint_every=checkpoint_every))
    if config.manifold_used == "umap":
        graph.add(Embed("manifold", config, device, distributed=distributed))
        graph.wire("vae", "latents", "manifold")
    graph.add(GMMStep("gmm", config, device, distributed=distributed))
    graph.wire("vae", "latents", "gmm")
    if config.manifold_used == "umap":
        graph.wire("manifold", "embedding", "gmm")
    graph.wire("gmm", "prior", "vae")
    return graph


class _Score:
    """The observer of a single-modality run: the reported state's accuracy/ARI/NMI (labels only
    score), each sweep's (from the GMM's recorded assignments), the ELBO, the VAE's seconds and,
    when the GMM finds K, that K."""

    def __init__(self, labels, config):
        self.labels, self.config = labels, config

    def __call__(self, round_index, outboxes):
        labels, vae, gmm_out = self.labels, outboxes["vae"], outboxes["gmm"]
        gmm, assignments = gmm_out["gmm"], gmm_out["assignments"]
        row = (clustering_metrics(labels, assignments) if labels is not None
               else dict.fromkeys(("accuracy", "ari", "nmi")))
        row.update(elbo=vae["elbo"], vae_seconds=vae["seconds"])
        if self.config.finds_k:  # K found: its posterior mode over the chain's last half, and that posterior
            row.update(clusters_found=gmm.n_clusters_found_,
                       clusters_found_posterior={str(k): v for k, v in gmm.clusters_found_posterior_.items()},
                       accuracy_many_to_one=(many_to_one_accuracy(labels, assignments) if labels is not None
                                             else None))
        scores = {}
        if labels is not None:
            for swept in gmm_out["sweep_assignments"]:
                for name, value in clustering_metrics(labels, swept).items():
                    scores.setdefault(name, []).append(value)
        row["sweep_scores"] = scores
        gmm_out["sweep_assignments"] = None  # scored: the (sweeps, N) array need not stay in the run's history
        return row


def _metrics(row):
    """A round's metrics (metrics.json's schema) from the engine's row."""
    metrics = {"iteration": row["round"], **{key: row[key] for key in ("accuracy", "ari", "nmi", "elbo")},
               "seconds": row["seconds"], "vae_seconds": row["vae_seconds"],
               "gmm_seconds": row["seconds"] - row["vae_seconds"]}
    metrics.update({key: row[key] for key in ("clusters_found", "clusters_found_posterior", "accuracy_many_to_one")
                    if key in row})
    return metrics


def _round_result(row, outboxes):
    vae, gmm_out, embed = outboxes["vae"], outboxes["gmm"], outboxes.get("manifold")
    return RoundResult(row["round"], vae["history"]["elbo"], vae["history"]["loss"], gmm_out["gmm"], vae["latents"],
                       gmm_out["assignments"], {**gmm_out["sweeps"], **row["sweep_scores"]}, _metrics(row),
                       None if embed is None else embed["embedding"])


class RunWriter:
    """The engine's handler of a single-modality run directory (:class:`~vaegmm.rundir.RunDirectory`'s
    layout: config.json, iteration_<r>/, metrics.json, checkpoint.pt)."""

    def __init__(self, run, config, image_shape, labels):
        self.run, self.config, self.image_shape, self.labels = run, config, image_shape, labels
        self.path = run.path

    def prepare(self, description, rounds, overwrite, resume):
        checkpoint = None
        if resume:
            checkpoint = self.run.load_checkpoint(self.config)  # refuses a different config
        else:
            self.run.start(self.config, overwrite=overwrite)
        if self.labels is not None:
            self.run.save_labels(self.labels)
        return checkpoint

    def save_checkpoint(self, state):
        self.run.save_checkpoint(state)

    def write_round(self, round_index, outboxes, metrics, graph):
        vae = graph["vae"].vae
        result = _round_result(metrics[round_index], outboxes)
        gmm_out, embed = outboxes["gmm"], outboxes.get("manifold")
        self.run.save_round(
            round_index, vae=vae.vae, optimizer=vae.optimizer, image_shape=self.image_shape, gmm=result.gmm,
            latents=result.latents, assignments=result.assignments, prior=gmm_out["prior"].to_numpy(),
            history={"elbo": result.elbo, "loss": result.loss, "sweeps": result.sweeps},
            **({} if embed is None else {"embedding": embed["embedding"], "manifold": embed["model"],
                                         "latent_clusters": gmm_out["clusters"]}),
        )
        self.run.save_metrics([_metrics(row) for row in metrics])


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
    """Run ``config.mutual_iterations`` rounds of VAE + GMM mutual learning on ``dataset``: the
    engine (:mod:`vaegmm.engine`) running :func:`mutual_graph`.

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
        and every step).
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
        the run directory, logs and shows progress; when resuming it reads the checkpoint and
        sends the other ranks what they need. Every rank returns the same result.

    Returns
    -------
    MutualResult
    """
    context = distributed if distributed is not None else SINGLE
    if context.active:  # UMAP runs on rank 0 alone: under torchrun the manifold is asked for, not the default
        config = config.without_default_manifold()
    check_data(dataset, config)
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 1):
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir of the run to continue.")
    device = resolve_device(config.device)
    if context.active and device.type == "cuda":
        device = torch.device(context.device)  # this rank's GPU
    labels = dataset.labels
    graph = mutual_graph(dataset, config, device, distributed=context, shuffle=shuffle,
                         checkpoint_every=checkpoint_every)
    writer = None if run_dir is None else RunWriter(RunDirectory(run_dir), config, dataset.image_shape, labels)
    result = run_graph(graph, config.mutual_iterations, seed=config.seed, directory=writer, resume=resume,
                       overwrite=overwrite, observers=[_Score(labels, config)], progress=progress, log=log,
                       stop_requested=stop_requested, seeds=round_seeds, distributed=context,
                       formatter=lambda row: format_round(_metrics(row)))
    mutual = MutualResult(config=config, vae=graph["vae"].vae.vae)
    mutual.rounds = [_round_result(row, outboxes) for row, outboxes in zip(result.rounds, result.outboxes)]
    return mutual


def format_round(metrics):
    """One line: round, ELBO, accuracy, ARI, NMI, time."""
    scores = "  ".join(
        f"{name} {metrics[name]:.4f}" if metrics[name] is not None else f"{name} n/a"
        for name in ("accuracy", "ari", "nmi")
    )
    found = f"  K found {metrics['clusters_found']}" if "clusters_found" in metrics else ""
    return f"round {metrics['iteration']}: ELBO {metrics['elbo']:.2f}  {scores}{found}  ({metrics['seconds']:.1f} s)"
