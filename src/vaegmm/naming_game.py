"""The Metropolis-Hastings naming game between two agents, each a VAE + GMM (Inter-GMM+VAE:
Taniguchi, Yoshida, Taniguchi & Hagiwara, "Emergent communication through Metropolis-Hastings
naming game with deep generative models", Advanced Robotics 2023, arXiv:2205.12392).

Agents A and B observe two views of the same data (A the images, B the same images rotated by
``rotation`` degrees). Each agent is the two modules of a single run (:mod:`vaegmm.modules`);
what is new is how the GMMs set each datum's sign w_n (its cluster), the symbol both agents
share. One round:

1. each agent's VAE step against the prior its own GMM sent (N(0, I) in round 0); each sends its
   GMM the latents z of its view;
2. each GMM draws its parameters given the new latents and the signs it holds; in round 0 the
   signs start uniformly at random, as in the paper (``mode="none"``: from the agent's own Gibbs
   chain, what it finds alone);
3. ``gmm_sweeps`` turns of the game; in each, A speaks to B, then B to A:

   - the speaker draws a sign per datum from its posterior, w_n ~ p(w | z_n^Sp, pi^Sp, mu^Sp, Lambda^Sp);
   - the listener accepts each with probability
     ``min(1, N(z_n^Li | mu^Li_{w_sp}, (Lambda^Li_{w_sp})^-1) / N(z_n^Li | mu^Li_{w_Li}, (Lambda^Li_{w_Li})^-1))``
     (the Metropolis-Hastings ratio of the joint model with the speaker's posterior as proposal),
     keeping its own sign otherwise;
   - the listener draws (pi, mu, Lambda) given its latents and its signs;

4. each GMM sends its VAE the prior of each datum's sign, N(mu_{w_n}, Lambda_{w_n}^-1).

With ``manifold="umap"`` each agent has a third module, :class:`~vaegmm.manifold.ManifoldModule`:
its GMM clusters (and speaks and listens on) the UMAP embedding of its own latents, and the prior
its VAE gets is, per datum, the latent-space moments of the cluster its sign names (the signs
weigh the VAE latents; see :mod:`vaegmm.manifold`).

``mode="none"`` (every proposal rejected: no communication; each agent keeps the signs of its
own round-0 chain, a single run's GMM) and ``mode="all"`` (every proposal accepted) are the
paper's baselines.

Output: ``metrics.json`` ({"mode", "rotation", "iterations": [{"iteration", "kappa", "acceptance",
"agents": [{"accuracy", "ari", "nmi", "elbo"}, ...]}]}, kappa = Cohen's kappa between the agents'
signs), ``game.json`` (the settings), ``agent_a/`` and ``agent_b/`` (each a normal run directory:
``vaegmm report --run DIR/agent_a`` works), ``figures/naming_game.png`` and ``report.md``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, cohen_kappa_score

from . import plots
from .augment import affine_views
from .data import ImageDataset
from .gibbs import estimate_log_gaussian_prob
from .manifold import ManifoldModule, manifold_seed
from .messages import PriorMessage
from .metrics import clustering_metrics
from .modules import GMMModule, VAEModule
from .mutual import check_data, resolve_device
from .rundir import RunDirectory, RunError, atomic_write_bytes, write_json

__all__ = ["MODES", "Agent", "NamingGameResult", "fit_naming_game", "rotated_view", "mh_acceptance",
           "write_game_report"]

MODES = ("mh", "none", "all")
AGENT_NAMES = ("agent_a", "agent_b")


@dataclass
class Agent:
    """One agent: its view of the data, its modules (two, or three with a manifold) and the signs
    its GMM holds."""

    name: str
    view: ImageDataset
    vae: VAEModule
    gmm: Optional[object] = None  # GibbsGMM
    latents: Optional[np.ndarray] = None  # (N, L) its VAE's latents
    signs: Optional[np.ndarray] = None
    prior: Optional[PriorMessage] = None
    rounds: List[dict] = field(default_factory=list)
    manifold: Optional[ManifoldModule] = None  # with manifold="umap"
    embedding: Optional[np.ndarray] = None  # (N, d) with manifold="umap"

    @property
    def clustered(self):
        """What its GMM clusters: the latents, or their manifold embedding."""
        return self.latents if self.embedding is None else self.embedding


@dataclass
class NamingGameResult:
    mode: str
    agents: List[Agent]
    iterations: List[dict]


def rotated_view(dataset, degrees):
    """The dataset with every image rotated by ``degrees`` about its centre (torch ops only)."""
    images = torch.as_tensor(dataset.flat())
    angle = torch.full((len(images),), math.radians(degrees))
    views = affine_views(images, dataset.image_shape, angle, torch.ones(len(images)), torch.zeros(len(images), 2))
    return ImageDataset(views.reshape(len(images), *dataset.image_shape).numpy(), dataset.labels,
                        f"{dataset.name} rotated {degrees:g} degrees")


def speak(gmm, latents, rng):
    """The speaker's signs: one draw per datum from p(w | z_n) under its GMM's parameters."""
    return gmm.sample_assignments(latents, rng)


def mh_acceptance(gmm, latents, proposed, current):
    """The listener's acceptance probability of each proposed sign,
    min(1, N(z_n | mu_{proposed}, Lambda^-1) / N(z_n | mu_{current}, Lambda^-1)) under its GMM."""
    log_density = estimate_log_gaussian_prob(latents, gmm.means_, gmm.precisions_cholesky_)  # (N, K)
    rows = np.arange(len(latents))
    return np.exp(np.minimum(0.0, log_density[rows, proposed] - log_density[rows, current]))


def _listen(listener, proposed, mode, rng):
    """The listener takes the proposals it accepts and redraws its parameters; returns the share accepted."""
    if mode == "mh":
        accepted = rng.random(len(proposed)) < mh_acceptance(listener.gmm, listener.clustered, proposed, listener.signs)
    else:
        accepted = np.full(len(proposed), mode == "all")
    listener.signs = np.where(accepted, proposed, listener.signs)
    listener.gmm.resample_parameters(listener.clustered, listener.signs, rng)
    return float(accepted.mean())


def fit_naming_game(
    dataset: ImageDataset,
    config,
    *,
    mode="mh",
    rotation=45.0,
    run_dir=None,
    overwrite=False,
    progress=True,
    log: Optional[Callable[[str], None]] = print,
):
    """Play ``config.mutual_iterations`` rounds of the naming game between two VAE+GMM agents.

    Parameters
    ----------
    dataset : ImageDataset
        Agent A's view; agent B sees every image rotated by ``rotation`` degrees.
    config : TrainConfig
        Both agents' settings (the same as a single run's; ``gmm_sweeps`` = turns of the game per
        round, each a turn of A speaking then B speaking). Agent B's seeds differ from A's.
    mode : {"mh", "none", "all"}
        The listener's rule: the Metropolis-Hastings test, reject all, or accept all.
    run_dir : path, default=None
        Where to write the game's directory (see the module docstring); nothing if None. A
        non-empty directory is refused unless ``overwrite``.

    Returns
    -------
    NamingGameResult
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if not math.isfinite(rotation):
        raise ValueError(f"rotation must be a finite number of degrees, got {rotation!r}.")
    check_data(dataset, config)
    device = resolve_device(config.device)
    labels = dataset.labels
    runs = _start_directories(run_dir, config, mode, rotation, overwrite)
    views = (dataset, rotated_view(dataset, rotation))
    agents = [Agent(name, view, VAEModule(config, view.flat().shape[1], view.image_shape, device),
                    manifold=ManifoldModule(config, device) if config.manifold == "umap" else None)
              for name, view in zip(AGENT_NAMES, views)]
    images = [torch.as_tensor(agent.view.flat(), device=device) for agent in agents]
    for agent in agents:
        agent.prior = PriorMessage.standard_normal(len(dataset), config.latent_dim, device)
    if runs is not None:
        for run, agent in zip(runs[1:], agents):
            run.save_images(agent.view.images)
            if labels is not None:
                run.save_labels(labels)

    # Per round: a torch seed and a SeedSequence per agent, and one for the game's draws.
    round_seeds = np.random.SeedSequence(config.seed).spawn(config.mutual_iterations)
    iterations = []
    for iteration, round_seed in enumerate(round_seeds):
        started = time.perf_counter()
        agent_seeds = round_seed.spawn(len(agents) + 1)
        game_rng = np.random.default_rng(agent_seeds[-1])
        # 1. Each agent's VAE step, and its latents (with a manifold: and their embedding).
        for agent, agent_images, seed in zip(agents, images, agent_seeds):
            agent.vae.start_round(iteration, int(seed.generate_state(1, dtype=np.uint64)[0] >> 1))
            agent.vae.fit(agent_images, agent.prior, progress=progress, desc=f"round {iteration} {agent.name} VAE")
            agent.latents = agent.vae.encode(agent_images)
            if agent.manifold is not None:
                agent.embedding = agent.manifold.forward(agent.latents, manifold_seed(seed))
        # 2. Each GMM's parameters given the new latents and the signs it holds. Round 0: the signs
        #    start uniformly at random (mh, all: the categories emerge in the game), or from the
        #    agent's own Gibbs chain (none: what each agent finds alone).
        for agent, seed in zip(agents, agent_seeds):
            module = GMMModule(config, labels, device)
            if agent.gmm is None and mode == "none":
                agent.signs = module.fit(agent.clustered, seed, progress=progress).gmm.labels_.copy()
            elif agent.gmm is None:
                agent.signs = game_rng.integers(config.cluster_slots, size=len(dataset))
            agent.gmm = module.sampler(agent.clustered)  # its prior follows the round's latents (gmm_prior="data")
            agent.gmm.resample_parameters(agent.clustered, agent.signs, game_rng)
        # 3. The game.
        turns = {"kappa": [], "acceptance": [], **{f"{agent.name}_ari": [] for agent in agents}}
        for _ in range(config.gmm_sweeps):
            for speaker, listener in ((agents[0], agents[1]), (agents[1], agents[0])):
                proposed = speak(speaker.gmm, speaker.clustered, game_rng)
                turns["acceptance"].append(_listen(listener, proposed, mode, game_rng))
            turns["kappa"].append(float(cohen_kappa_score(agents[0].signs, agents[1].signs)))
            if labels is not None:
                for agent in agents:
                    turns[f"{agent.name}_ari"].append(float(adjusted_rand_score(labels, agent.signs)))
        # 4. Each GMM's message to its VAE: the prior of each datum's sign (with a manifold: the
        #    latent-space moments of the sign's cluster).
        for agent in agents:
            if agent.manifold is None:
                agent.prior = PriorMessage.from_gmm(agent.gmm, agent.signs, config.prior_covariance, device)
            else:
                one_hot = np.eye(agent.gmm.means_.shape[0])[agent.signs]
                agent.prior = agent.manifold.message(one_hot, agent.latents)
        seconds = time.perf_counter() - started
        record = {"iteration": iteration, "kappa": turns["kappa"][-1], "acceptance": float(np.mean(turns["acceptance"])),
                  "agents": [], "seconds": seconds, "turns": turns}
        for agent in agents:
            scores = (clustering_metrics(labels, agent.signs) if labels is not None
                      else dict.fromkeys(("accuracy", "ari", "nmi")))
            metrics = {"iteration": iteration, **scores, "elbo": agent.vae.elbo[-1], "seconds": seconds}
            agent.rounds.append(metrics)
            record["agents"].append({key: metrics[key] for key in ("accuracy", "ari", "nmi", "elbo")})
        iterations.append(record)
        if runs is not None:
            _save_round(runs, agents, iteration, turns, iterations, mode, rotation)
        if log is not None:
            log(format_game_round(record))
    return NamingGameResult(mode, agents, iterations)


def _start_directories(run_dir, config, mode, rotation, overwrite):
    """(the game's RunDirectory, agent A's, agent B's), started; None without ``run_dir``."""
    if run_dir is None:
        return None
    root = Path(run_dir)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise RunError(f"{root} is not empty; choose another directory or pass overwrite=True (--overwrite).")
        for child in root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "game.json", {"mode": mode, "rotation": rotation, "agents": list(AGENT_NAMES),
                                    "config": config.to_dict()})
    agents = [RunDirectory(root / name) for name in AGENT_NAMES]
    for agent in agents:
        agent.start(config)
    return [RunDirectory(root)] + agents


def _save_round(runs, agents, iteration, turns, iterations, mode, rotation):
    game, *agent_runs = runs
    for run, agent in zip(agent_runs, agents):
        sweeps = {"ari": turns[f"{agent.name}_ari"], "kappa": turns["kappa"]} if turns[f"{agent.name}_ari"] else {}
        run.save_round(
            iteration, vae=agent.vae.vae, optimizer=agent.vae.optimizer, image_shape=agent.view.image_shape,
            gmm=agent.gmm, latents=agent.latents, assignments=agent.signs,
            prior=agent.prior.to_numpy(), history={"elbo": agent.vae.elbo, "loss": agent.vae.loss, "sweeps": sweeps},
            **({} if agent.manifold is None else {"embedding": agent.embedding, "manifold": agent.manifold.model,
                                                  "latent_clusters": agent.manifold.clusters}),
        )
        run.save_metrics(agent.rounds)
    write_json(game.path / "metrics.json", {"mode": mode, "rotation": rotation, "iterations": iterations})


def format_game_round(record):
    """One line: round, kappa, acceptance, each agent's accuracy and ARI."""
    agents = "  ".join(
        f"{name[-1].upper()}: acc {a['accuracy']:.4f} ARI {a['ari']:.4f}" if a["accuracy"] is not None
        else f"{name[-1].upper()}: n/a" for name, a in zip(AGENT_NAMES, record["agents"]))
    return (f"round {record['iteration']}: kappa {record['kappa']:.4f}  accepted {100 * record['acceptance']:.1f}%  "
            f"{agents}  ({record['seconds']:.1f} s)")


def write_game_report(run_dir):
    """``figures/naming_game.png`` and ``report.md`` of a game directory; returns their paths."""
    root = Path(run_dir)
    metrics_path = root / "metrics.json"
    if not metrics_path.exists():
        raise RunError(f"{root} holds no naming game (no metrics.json); play one with `vaegmm naming-game --out {root}`.")
    game = json.loads(metrics_path.read_text())
    rounds = game["iterations"]
    figure = plots.plot_naming_game(rounds, root / "figures" / "naming_game.png", AGENT_NAMES)
    lines = [f"# Naming game ({game['mode']}): two VAE+GMM agents", "",
             f"Agent A sees the images, agent B the same images rotated by {game['rotation']:g} degrees. "
             f"Listener's rule: `{game['mode']}` (mh: Metropolis-Hastings test; none: reject all; all: accept all). "
             "Kappa is Cohen's kappa between the agents' signs; accuracy, ARI and NMI score each agent's signs "
             "against the labels (labels score only).", "",
             "| round | kappa | accepted | A accuracy | A ARI | A NMI | B accuracy | B ARI | B NMI |",
             "|---|---|---|---|---|---|---|---|---|"]
    cell = lambda value: "n/a" if value is None else f"{value:.4f}"  # noqa: E731
    for record in rounds:
        a, b = record["agents"]
        lines.append(f"| {record['iteration']} | {record['kappa']:.4f} | {100 * record['acceptance']:.1f}% | "
                     + " | ".join(cell(agent[key]) for agent in (a, b) for key in ("accuracy", "ari", "nmi")) + " |")
    lines += ["", "![kappa and ARI per round](figures/naming_game.png)", "",
              "*Left: Cohen's kappa between the agents' signs after each turn of the game (a turn: A speaks, then B). "
              "Right: each agent's ARI per round.*", "",
              "Each agent's own run report: `vaegmm report --run " + str(root / "agent_a") + "` (and agent_b).", ""]
    report = root / "report.md"
    atomic_write_bytes(report, "\n".join(lines).encode("utf-8"))
    return [figure, report]
