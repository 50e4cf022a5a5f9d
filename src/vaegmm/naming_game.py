"""The Metropolis-Hastings naming game between two agents, each a VAE + GMM (Inter-GMM+VAE:
Taniguchi, Yoshida, Taniguchi & Hagiwara, "Emergent communication through Metropolis-Hastings
naming game with deep generative models", Advanced Robotics 2023, arXiv:2205.12392).

Agents A and B observe two views of the same data (A the images, B the same images rotated by
``rotation`` degrees). Each agent is the two modules of a single run (:mod:`vaegmm.modules`);
what is new is how the GMMs set each datum's sign w_n (its cluster), the symbol both agents
share. One round:

1. each agent's VAE step against the prior its own GMM sent (N(0, I) in round 0); each sends its
   GMM the latents z of its view;
2. each GMM draws its parameters given the new latents and the signs it holds. In round 0 each
   agent's signs start from its own Gibbs chain (a single run's GMM step), and agent B renames its
   categories after the signs A speaks for the same data (:func:`adopt_names`), so the game starts
   from the categories each agent finds and from A's names for them (``start="own"``, the
   default); or, as in the paper, uniformly at random (``start="random"``: the categories too come
   out of the game). ``mode="none"`` keeps each agent's own chain, unrenamed;
3. ``gmm_sweeps`` turns of the game; in each, A speaks to B, then B to A:

   - the speaker draws a sign per datum from its posterior, w_n ~ p(w | z_n^Sp, pi^Sp, mu^Sp, Lambda^Sp);
   - the listener accepts each with probability
     ``min(1, N(z_n^Li | mu^Li_{w_sp}, (Lambda^Li_{w_sp})^-1) / N(z_n^Li | mu^Li_{w_Li}, (Lambda^Li_{w_Li})^-1))``
     (the Metropolis-Hastings ratio of the joint model with the speaker's posterior as proposal),
     keeping its own sign otherwise;
   - the listener draws (pi, mu, Lambda) given its latents and its signs;

4. each GMM sends its VAE each datum's prior (``prior_from="last"``, the paper's: the prior of its
   sign, N(mu_{w_n}, Lambda_{w_n}^-1); by default, as in a single run, the Gaussian moment-matched
   to its responsibilities under the listener's GMM).

With ``manifold="umap"`` each agent has a third module, :class:`~vaegmm.manifold.ManifoldModule`:
its GMM clusters (and speaks and listens on) the UMAP embedding of its own latents, and the prior
its VAE gets is, per datum, the latent-space moments of the cluster its sign names (the signs
weigh the VAE latents; see :mod:`vaegmm.manifold`).

``mode="none"`` (every proposal rejected: no communication; each agent keeps the signs of its
own round-0 chain, a single run's GMM) and ``mode="all"`` (every proposal accepted) are the
paper's baselines.

The game is a wiring of :mod:`vaegmm.engine` (:func:`naming_game_graph`): each agent's VAE is a
:class:`~vaegmm.multimodal.VAEStep`, its manifold an :class:`Embed`, and the two GMMs with the
turns between them one :class:`NamingGame` module. The engine owns seeds, checkpoints (a game
killed at any instant resumes to the same metrics, ``resume=True``) and the stop on Ctrl-C.
The message to each VAE follows ``prior_from`` as in a single run ("last": the sign's cluster,
the paper's message).

Output: ``metrics.json`` ({"mode", "rotation", "iterations": [{"iteration", "kappa", "acceptance",
"agents": [{"accuracy", "ari", "nmi", "elbo"}, ...]}]}, kappa = Cohen's kappa between the agents'
signs), ``game.json`` (the settings), ``graph.json`` and ``checkpoint.pt`` (the engine's),
``agent_a/`` and ``agent_b/`` (each a normal run directory: ``vaegmm report --run DIR/agent_a``
works), ``figures/naming_game.png`` and ``report.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, cohen_kappa_score

from . import plots
from .augment import affine_views
from .config import GMMConfig
from .data import ImageDataset
from .distributed import SINGLE
from .engine import Addressed, Graph, GraphDirectory, GraphResult, Module, run
from .gibbs import estimate_log_gaussian_prob
from .manifold import Embed, ManifoldModule
from .messages import prior_message
from .metrics import clustering_metrics
from .modules import GMMModule
from .multimodal import VAEStep
from .mutual import check_data, resolve_device
from .rundir import RunDirectory, RunError, atomic_write_bytes, write_json

__all__ = ["MODES", "STARTS", "NamingGame", "adopt_names", "Embed", "GameScore", "NamingGameResult",
           "naming_game_graph", "fit_naming_game", "rotated_view", "mh_acceptance", "write_game_report"]

MODES = ("mh", "none", "all")
STARTS = ("own", "random")
AGENT_NAMES = ("agent_a", "agent_b")


@dataclass
class NamingGameResult:
    mode: str
    iterations: List[dict]  # per round: kappa, acceptance, the agents' scores, turns
    engine: GraphResult  # every module's outbox per round (the agents' latents, signs, priors)


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


def adopt_names(own, heard, n_names):
    """The listener's own categories renamed after the names it heard for the same data: the
    one-to-one renaming that makes the most data agree (the Hungarian method on the table of
    co-occurrences, which the game's first turn of speaking gives the listener)."""
    table = np.zeros((n_names, n_names), dtype=np.int64)
    np.add.at(table, (own, heard), 1)
    rows, columns = linear_sum_assignment(-table)
    renamed = np.empty(n_names, dtype=np.int64)
    renamed[rows] = columns
    return renamed[own]


def mh_acceptance(gmm, latents, proposed, current):
    """The listener's acceptance probability of each proposed sign,
    min(1, N(z_n | mu_{proposed}, Lambda^-1) / N(z_n | mu_{current}, Lambda^-1)) under its GMM."""
    log_density = estimate_log_gaussian_prob(latents, gmm.means_, gmm.precisions_cholesky_)  # (N, K)
    rows = np.arange(len(latents))
    return np.exp(np.minimum(0.0, log_density[rows, proposed] - log_density[rows, current]))


class NamingGame(Module):
    """The two agents' GMMs and the game between them (Inter-GMM): reads each agent's
    ``"latents"`` (and ``"embedding"`` from its :class:`Embed`, which it then clusters), plays
    ``config.gmm_sweeps`` turns, and sends each agent's VAE its ``"prior"``
    (:class:`~vaegmm.engine.Addressed`), built from its GMM and signs as ``config.prior_from``
    asks ("last": the sign's cluster, the paper's; "responsibilities", "mixture"). Also sends
    ``"signs_a"``, ``"signs_b"``, ``"kappa"``, ``"acceptance"`` and ``"turn_signs"`` (the
    signs after every turn, for scoring). Its state: the agents' GMMs and signs. ``start``: how
    round 0's signs begin, "own" (each agent's chain, the later agents renamed after the first's
    signs) or "random" (the paper's). Under torchrun the game runs on rank 0, which sends its
    outbox to the other ranks (:attr:`~vaegmm.engine.Module.rank0_only`): its turns cost little
    beside the agents' data-parallel VAEs.
    """

    rank0_only = True

    def __init__(self, name, config, mode, device, agents=AGENT_NAMES, start="own"):
        super().__init__(name)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
        if start not in STARTS:
            raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}.")
        if config.prior_from == "average":
            raise ValueError("prior_from = average is not defined for the naming game (its signs are not a Gibbs "
                             "chain's sweeps); use prior_from responsibilities, last or mixture.")
        self.config, self.mode, self.device, self.agents = GMMConfig.of(config), mode, device, tuple(agents)
        self.start = start
        self.gmms, self.signs = {}, {}

    def describe(self):
        # "start" only where it is not the paper's, so that games saved before it existed still resume.
        return {**super().describe(), "mode": self.mode, **({"start": self.start} if self.start != "random" else {})}

    def step(self, inbox, context):
        config = self.config
        latents = {source: value for source, value in inbox.each("latents")}
        embeddings = {source[:-len("_manifold")]: value for source, value in inbox.each("embedding")}
        clustered = {agent: embeddings.get(agent, latents[agent]) for agent in self.agents}
        agent_seeds = context.seed.spawn(len(self.agents) + 1)
        rng = np.random.default_rng(agent_seeds[-1])
        # Each GMM's parameters given the new latents and the signs it holds. Round 0: the signs start
        # uniformly at random (start="random", the paper's: the categories emerge in the game), or from
        # each agent's own Gibbs chain (start="own", and always with mode="none": what each agent finds
        # alone), the later agents renaming their categories after the names the first speaks for them.
        for agent, seed in zip(self.agents, agent_seeds):
            module = GMMModule(config, None, self.device)
            if agent not in self.signs and (self.mode == "none" or self.start == "own"):
                self.signs[agent] = module.fit(clustered[agent], seed, progress=context.progress).gmm.labels_.copy()
                if self.mode != "none" and agent != self.agents[0]:
                    self.signs[agent] = adopt_names(self.signs[agent], self.signs[self.agents[0]],
                                                    config.cluster_slots)
            elif agent not in self.signs:
                self.signs[agent] = rng.integers(config.cluster_slots, size=len(clustered[agent]))
            self.gmms[agent] = module.sampler(clustered[agent])  # its prior follows the round's latents
            self.gmms[agent].resample_parameters(clustered[agent], self.signs[agent], rng)
        # The game: turns of A speaking to B, then B to A.
        a, b = self.agents
        kappa, acceptance, turn_signs = [], [], []
        for _ in range(config.gmm_sweeps):
            for speaker, listener in ((a, b), (b, a)):
                proposed = speak(self.gmms[speaker], clustered[speaker], rng)
                acceptance.append(self._listen(listener, clustered[listener], proposed, rng))
            kappa.append(float(cohen_kappa_score(self.signs[a], self.signs[b])))
            turn_signs.append(np.stack([self.signs[a], self.signs[b]]).astype(np.int16))
        # Each GMM's message to its VAE (with a manifold: the latent-space moments of its clusters).
        prior = {}
        for agent in self.agents:
            gmm = self.gmms[agent]
            if agent in embeddings:
                prior[agent] = ManifoldModule(config, self.device).backward(gmm, clustered[agent], latents[agent])
            else:
                prior[agent] = prior_message(config.prior_from, config.prior_covariance, gmm, latents[agent],
                                             self.device)
        return {"prior": Addressed(prior), "signs_a": self.signs[a].copy(), "signs_b": self.signs[b].copy(),
                "kappa": kappa[-1], "acceptance": float(np.mean(acceptance)),
                "turns": {"kappa": kappa, "acceptance": acceptance}, "turn_signs": np.stack(turn_signs)}

    def _listen(self, listener, clustered, proposed, rng):
        """The listener takes the proposals it accepts and redraws its parameters; returns the share accepted."""
        gmm, current = self.gmms[listener], self.signs[listener]
        if self.mode == "mh":
            accepted = rng.random(len(proposed)) < mh_acceptance(gmm, clustered, proposed, current)
        else:
            accepted = np.full(len(proposed), self.mode == "all")
        self.signs[listener] = np.where(accepted, proposed, current)
        gmm.resample_parameters(clustered, self.signs[listener], rng)
        return float(accepted.mean())

    def state(self):
        return {"gmms": dict(self.gmms), "signs": dict(self.signs)}

    def restore(self, state):
        self.gmms, self.signs = dict(state["gmms"]), dict(state["signs"])

    def summary(self, outbox):
        return {"kappa": outbox["kappa"], "acceptance": outbox["acceptance"], "turns": outbox["turns"]}


class GameScore:
    """The game's observer: each agent's accuracy, ARI and NMI against the labels (labels only
    score), and its ARI after every turn."""

    def __init__(self, labels, game="game", agents=AGENT_NAMES):
        self.labels, self.game, self.agents = np.asarray(labels), game, agents

    def __call__(self, round_index, outboxes):
        outbox, row = outboxes[self.game], {}
        for index, agent in enumerate(self.agents):
            for key, value in clustering_metrics(self.labels, outbox[f"signs_{agent[-1]}"]).items():
                row[f"{agent}/{key}"] = value
            row[f"{agent}/turn_ari"] = [float(adjusted_rand_score(self.labels, signs[index]))
                                        for signs in outbox["turn_signs"]]
        return row


def naming_game_graph(views, config, mode, device, start="own", distributed=None):
    """The graph of the game: each agent's VAE (and, with a manifold, its Embed), and the game
    (``distributed``: the VAEs data-parallel, UMAP and the game on rank 0)."""
    graph = Graph()
    for name, view in zip(AGENT_NAMES, views):
        graph.add(VAEStep(name, view, config, device, distributed=distributed))
    if config.manifold_used == "umap":
        for name in AGENT_NAMES:
            graph.add(Embed(f"{name}_manifold", config, device, distributed=distributed))
            graph.wire(name, "latents", f"{name}_manifold")
    graph.add(NamingGame("game", config, mode, device, start=start))
    for name in AGENT_NAMES:
        graph.wire(name, "latents", "game")
        if config.manifold_used == "umap":
            graph.wire(f"{name}_manifold", "embedding", "game")
        graph.wire("game", "prior", name)
    return graph


def fit_naming_game(
    dataset: ImageDataset,
    config,
    *,
    mode="mh",
    start="own",
    rotation=45.0,
    run_dir=None,
    overwrite=False,
    resume=False,
    progress=True,
    log: Optional[Callable[[str], None]] = print,
    stop_requested=None,
    distributed=None,
):
    """Play ``config.mutual_iterations`` rounds of the naming game between two VAE+GMM agents, a
    wiring of :mod:`vaegmm.engine` (:func:`naming_game_graph`).

    Parameters
    ----------
    dataset : ImageDataset
        Agent A's view; agent B sees every image rotated by ``rotation`` degrees.
    config : TrainConfig
        Both agents' settings (the same as a single run's; ``gmm_sweeps`` = turns of the game per
        round, each a turn of A speaking then B speaking; ``prior_from`` the message to the VAEs).
    mode : {"mh", "none", "all"}
        The listener's rule: the Metropolis-Hastings test, reject all, or accept all.
    start : {"own", "random"}
        The signs in round 0: each agent's own Gibbs chain (a single run's GMM step) with agent
        B's categories renamed after the signs A speaks for them (:func:`adopt_names`), or
        uniformly at random (the paper's). ``mode="none"`` always starts from the agents' own chains.
    run_dir : path, default=None
        Where to write the game's directory (see the module docstring); nothing if None. A
        finished game is kept and a different one refused unless ``overwrite``.
    resume : bool
        Continue the interrupted game in ``run_dir`` (killed at any instant) to the metrics of an
        uninterrupted game; the settings must be the saved ones.
    stop_requested : callable, default=None
        Polled between steps and after every epoch; True stops the game with its checkpoint kept.
    distributed : vaegmm.distributed.Context, default=None
        One rank of a ``torch.distributed`` run (every rank calls it with the same arguments):
        each agent's VAE trains data-parallel on this rank's shard; UMAP (with a manifold) and the
        game's turns run on rank 0, which sends the others their results. Rank 0 alone writes and
        logs; every rank returns the same result.

    Returns
    -------
    NamingGameResult
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if start not in STARTS:
        raise ValueError(f"start must be one of {', '.join(STARTS)}, got {start!r}.")
    if not math.isfinite(rotation):
        raise ValueError(f"rotation must be a finite number of degrees, got {rotation!r}.")
    context = distributed if distributed is not None else SINGLE
    if context.active:  # UMAP runs on rank 0 alone: under torchrun the manifold is asked for, not the default
        config = config.without_default_manifold()
    check_data(dataset, config)
    device = resolve_device(config.device)
    if context.active and device.type == "cuda":
        device = torch.device(context.device)  # this rank's GPU
    labels = dataset.labels
    views = (dataset, rotated_view(dataset, rotation))
    graph = naming_game_graph(views, config, mode, device, start=start, distributed=context)
    settings = {"mode": mode, "rotation": rotation, "data": dataset.name, "config": config.to_dict(),
                **({"start": start} if start != "random" else {})}

    directory = None
    if run_dir is not None:
        directory = GameDirectory(run_dir, views, labels, mode, rotation, config, start)
    result = run(graph, config.mutual_iterations, seed=config.seed, directory=directory, resume=resume,
                 overwrite=overwrite, observers=[GameScore(labels)] if labels is not None else [],
                 progress=progress and context.is_main, log=log, stop_requested=stop_requested, settings=settings,
                 formatter=lambda row: format_game_round(_record(row)), distributed=context)
    return NamingGameResult(mode, [_record(row) for row in result.rounds], result)


class GameDirectory(GraphDirectory):
    """The game's directory: the engine's graph.json and checkpoint.pt, and the game's own layout
    (game.json, metrics.json, each agent's run directory)."""

    def __init__(self, path, views, labels, mode, rotation, config, start="own"):
        super().__init__(path, files=("game.json", "report.md", *AGENT_NAMES))
        self.views, self.labels, self.mode, self.rotation, self.config = views, labels, mode, rotation, config
        self.start = start

    def write_round(self, round_index, outboxes, metrics, graph):
        _save_round(self.path, graph, self.views, self.labels, round_index, outboxes, metrics, self.mode,
                    self.rotation, self.config, self.start)


def _record(row):
    """The game's record of a round (metrics.json's schema) from the engine's metrics row."""
    agents = [{key: row.get(f"{agent}/{key}") for key in ("accuracy", "ari", "nmi")} | {"elbo": row[f"{agent}/elbo"]}
              for agent in AGENT_NAMES]
    record = {"iteration": row["round"], "kappa": row["game/kappa"], "acceptance": row["game/acceptance"],
              "agents": agents, "seconds": row["seconds"],
              "turns": {**row["game/turns"], **{f"{agent}_ari": row.get(f"{agent}/turn_ari", []) for agent in AGENT_NAMES}}}
    return record


def _save_round(root, graph, views, labels, iteration, outboxes, rows, mode, rotation, config, start):
    """Write a finished round: each agent's run directory (``vaegmm report --run`` works on it) and
    the game's metrics.json."""
    game_outbox = outboxes["game"]
    if iteration == 0:
        write_json(root / "game.json", {"mode": mode, "start": start, "rotation": rotation,
                                        "agents": list(AGENT_NAMES), "config": config.to_dict()})
    for index, (name, view) in enumerate(zip(AGENT_NAMES, views)):
        run = RunDirectory(root / name)
        if iteration == 0:
            run.save_config(config)
            run.save_images(view.images)
            if labels is not None:
                run.save_labels(labels)
        vae = graph[name].vae
        row = rows[iteration]
        turn_ari = row.get(f"{name}/turn_ari", [])
        embed = outboxes.get(f"{name}_manifold")
        gmm = graph["game"].gmms[name]
        run.save_round(
            iteration, vae=vae.vae, optimizer=vae.optimizer, image_shape=view.image_shape, gmm=gmm,
            latents=outboxes[name]["latents"], assignments=game_outbox[f"signs_{name[-1]}"],
            prior=game_outbox["prior"][name].to_numpy(),
            history={"elbo": vae.elbo, "loss": vae.loss,
                     "sweeps": {"ari": turn_ari, "kappa": game_outbox["turns"]["kappa"]} if turn_ari else {}},
            **({} if embed is None else {"embedding": embed["embedding"], "manifold": embed["model"],
                                         "latent_clusters": _latent_clusters(gmm, embed["embedding"],
                                                                             outboxes[name]["latents"], config)}),
        )
        run.save_metrics([{"iteration": r["round"], **{key: r.get(f"{name}/{key}") for key in ("accuracy", "ari", "nmi")},
                           "elbo": r[f"{name}/elbo"], "seconds": r["seconds"]} for r in rows])
    write_json(root / "metrics.json", {"mode": mode, "rotation": rotation, "iterations": [_record(r) for r in rows]})


def _latent_clusters(gmm, embedding, latents, config):
    """The latent-space moments of the agent's clusters (what its prior was built from)."""
    manifold = ManifoldModule(config, torch.device("cpu"))
    manifold.backward(gmm, embedding, latents)
    return manifold.clusters


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
