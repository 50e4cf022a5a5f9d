"""Modules wired into a graph, and one loop that runs them (SERKET's composition, SPEC §5).

A system is a :class:`Graph`: modules, each with one job, and wires ``(source, message,
destination)`` that carry named messages between them. :func:`run` updates the modules in the
graph's order, round after round. A module reads what its wires deliver (its inbox) and returns
its outbox, a dict of named messages::

    graph = Graph()
    graph.add(VAEStep("vae_a", images_a, config_a))
    graph.add(VAEStep("vae_b", images_b, config_b))
    graph.add(JointGMM("gmm", config))
    graph.wire("vae_a", "latents", "gmm")
    graph.wire("vae_b", "latents", "gmm")
    graph.wire("gmm", "prior", "vae_a")
    graph.wire("gmm", "prior", "vae_b")
    result = run(graph, rounds=2, seed=0, run_dir="runs/two_views",
                 observers=[LabelScore(labels, "gmm", "assignments")])

A wire from a module earlier in the order delivers this round's message; a wire from a later one
(the GMM's prior back to the VAEs) delivers the previous round's, and nothing in round 0, where
the receiver uses its own default (a VAE: the N(0, I) prior). A message that is an
:class:`Addressed` dict is delivered per destination: each destination gets its own entry.

The loop, not the modules, owns:

- **seeds**: one ``numpy.random.SeedSequence`` per round and module, spawned from one integer
  seed (the module's step gets it in its :class:`StepContext`), so a step depends only on the
  seed, the module's state and its inbox;
- **checkpoints and resume**: after every module's step the states of all modules and the
  messages in flight are written to ``run_dir/checkpoint.pt``; ``resume=True`` continues from the
  last one, so a run killed at any instant, even by SIGKILL, resumes to the same metrics as an
  uninterrupted run (the step that was cut off is run again from its start, with its own seed,
  or from where it last saved itself, :meth:`StepContext.checkpoint`); the directory's handler
  (:class:`GraphDirectory`, or a system's own layout) writes them;
- **the stop**: ``stop_requested`` is polled between steps (and by modules inside long steps,
  :meth:`StepContext.check_stop`); the run stops with its last checkpoint kept;
- **the distributed context**: under torchrun every rank runs every step (a module marked
  ``rank0_only`` runs on rank 0, which sends the others its outbox), rank 0 alone writes,
  logs and reads the checkpoint (which it sends the others), and a stop on any rank stops all;
- **the run directory**: ``graph.json`` (the graph and every module's config), ``round_<r>/<module>/``
  (what each module writes, :meth:`Module.save`), ``metrics.json`` and ``checkpoint.pt``;
  a finished run is never replaced without ``overwrite``;
- **metrics**: observers score each round from the outboxes. Labels reach an observer
  (:class:`LabelScore`), never a module;
- **logging** (one line per round) and progress bars (passed to the modules' steps).

A new system is a new wiring of existing modules, or a new :class:`Module` subclass with one
``step``; not a new loop.
"""

from __future__ import annotations

import abc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from .config import module_config
from .metrics import clustering_metrics
from .rundir import RunComplete, RunError, write_file, write_json

__all__ = ["Module", "Graph", "Wire", "Addressed", "Inbox", "StepContext", "GraphResult", "LabelScore", "run",
           "torch_seed", "read_settings", "GraphDirectory", "spawned_seeds", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1
_ROUND_PREFIX = "round_"
_RUN_FILES = ("graph.json", "metrics.json", "checkpoint.pt", "labels.npy", "report.md")


class Addressed(dict):
    """A message with one entry per destination module (by name): a wire delivers its
    destination's entry only (the joint GMM's prior: each VAE its own block)."""


@dataclass(frozen=True)
class Wire:
    source: str
    message: str
    destination: str


class Inbox:
    """What a module's wires delivered this step: messages by name, and by (source, name) when
    several sources send the same name (a joint GMM's latents, one per modality)."""

    def __init__(self, deliveries):
        self._deliveries = list(deliveries)  # [(source, message, value)] in wiring order

    def __contains__(self, message):
        return any(name == message for _, name, _ in self._deliveries)

    def __getitem__(self, message):
        values = self.each(message)
        if not values:
            raise KeyError(f"no message {message!r} was delivered")
        if len(values) > 1:
            raise KeyError(f"{len(values)} sources sent {message!r}; read them with inbox.each({message!r})")
        return values[0][1]

    def get(self, message, default=None):
        return self[message] if message in self else default

    def each(self, message):
        """[(source, value), ...] of every delivery of ``message``, in wiring order."""
        return [(source, value) for source, name, value in self._deliveries if name == message]

    def __repr__(self):
        return f"Inbox({[(source, name) for source, name, _ in self._deliveries]})"


def torch_seed(seed_sequence):
    """An int seed for torch from a ``numpy.random.SeedSequence``."""
    return int(seed_sequence.generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class StepContext:
    """What the loop hands a module's step: the round, the module's seed for this round, whether
    to show progress, the stop check, and the means of a checkpoint inside a long step.

    Attributes
    ----------
    round : int
    seed : numpy.random.SeedSequence, the module's seed of this round
    progress : bool
    resume : the ``progress`` of the step's last :meth:`checkpoint` when the run resumes inside
        this step (None otherwise): the step continues from it
    """

    round: int
    seed: np.random.SeedSequence
    progress: bool = False
    stop_requested: Callable[[], bool] = field(default=lambda: False)
    resume: Any = None
    save: Optional[Callable[[Any], None]] = None

    @property
    def torch_seed(self):
        return torch_seed(self.seed)

    def stop_asked(self):
        """Whether a stop was asked for (in a distributed run: on any rank; every rank must ask
        at the same points)."""
        return bool(self.stop_requested())

    def check_stop(self):
        """Raise KeyboardInterrupt if a stop was asked for (modules call it inside long steps)."""
        if self.stop_asked():
            raise KeyboardInterrupt

    def checkpoint(self, progress):
        """Save the run with this step under way: on resume the step is called again with
        ``context.resume = progress`` (its own picklable record of how far it got)."""
        if self.save is not None:
            self.save(progress)


class Module(abc.ABC):
    """One job of a system. Subclasses implement :meth:`step` (abstract: a module without one
    cannot be built); the rest has defaults.

    Parameters
    ----------
    name : str
        Unique within its graph; wires and the run directory use it.

    A module owns its state: whatever a later step needs (a warm-started VAE's weights, a chain's
    last assignments) is returned by :meth:`state` and put back by :meth:`restore`, so that the
    loop can checkpoint and resume it. Randomness comes only from ``context.seed``.
    """

    #: The module's settings, written into graph.json (a dataclass or a dict, or None).
    config = None
    #: Under torchrun, run :meth:`step` on rank 0 alone and send its outbox to the other ranks (a
    #: module with no distributed path of its own, whose work is small beside the sharded ones').
    #: Its step then sees no stop request (the loop checks between steps) and must not call
    #: collectives; its state is current on rank 0, which alone checkpoints.
    rank0_only = False

    def __init__(self, name):
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"A module name must be a non-empty string without '/', got {name!r}.")
        self.name = name

    @abc.abstractmethod
    def step(self, inbox: Inbox, context: StepContext) -> Dict[str, Any]:
        """Read the inbox, do the module's job for ``context.round``, return the outbox."""

    def state(self):
        """What a later step needs, as a picklable dict (tensors allowed)."""
        return {}

    def restore(self, state):
        """Put back :meth:`state`."""

    def save(self, folder: Path, outbox: Dict[str, Any]):
        """Write this round's artifacts into ``folder`` (``round_<r>/<name>/``)."""

    def summary(self, outbox: Dict[str, Any]) -> Dict[str, Any]:
        """Label-free numbers of this round for metrics.json and the log line (e.g. the ELBO)."""
        return {}

    def describe(self):
        """This module's entry in graph.json."""
        config = self.config
        if config is not None and hasattr(config, "to_dict"):
            config = config.to_dict()
        elif config is not None and not isinstance(config, dict):
            import dataclasses

            config = dataclasses.asdict(config)
        return {"name": self.name, "type": type(self).__name__, "config": config}


class Graph:
    """Modules in update order, and the wires between them."""

    def __init__(self):
        self.modules: List[Module] = []
        self.wires: List[Wire] = []

    def add(self, module):
        """Append ``module`` to the update order; returns it."""
        if not isinstance(module, Module):
            raise TypeError(f"Graph.add takes a vaegmm.engine.Module, got {type(module).__name__}.")
        if any(m.name == module.name for m in self.modules):
            raise ValueError(f"The graph already has a module named {module.name!r}; give each module its own name.")
        self.modules.append(module)
        return module

    def wire(self, source, message, destination):
        """Deliver ``source``'s ``message`` to ``destination`` (this round's if ``source`` comes
        first in the order, else the previous round's)."""
        names = [m.name for m in self.modules]
        for name in (source, destination):
            if name not in names:
                raise ValueError(f"No module named {name!r} in the graph (modules: {', '.join(names)}); add it first.")
        if source == destination:
            raise ValueError(f"A wire from {source!r} to itself carries nothing; keep it in the module's state.")
        wire = Wire(source, message, destination)
        if wire in self.wires:
            raise ValueError(f"The wire {source} -{message}-> {destination} is already there.")
        self.wires.append(wire)
        return self

    def __getitem__(self, name):
        for module in self.modules:
            if module.name == name:
                return module
        raise KeyError(name)

    def describe(self):
        return {"modules": [m.describe() for m in self.modules],
                "wires": [[w.source, w.message, w.destination] for w in self.wires]}

    def inbox(self, destination, outboxes):
        """The deliveries to ``destination`` from the latest outboxes."""
        deliveries = []
        for wire in self.wires:
            if wire.destination != destination or wire.source not in outboxes:
                continue
            outbox = outboxes[wire.source]
            if wire.message not in outbox:
                raise KeyError(f"Module {wire.source!r} sent no message {wire.message!r} "
                               f"(it sends {', '.join(sorted(outbox))}); fix the wire.")
            value = outbox[wire.message]
            if isinstance(value, Addressed):
                if destination not in value:
                    continue
                value = value[destination]
            deliveries.append((wire.source, wire.message, value))
        return Inbox(deliveries)


class LabelScore:
    """An observer: accuracy, ARI and NMI of a module's assignments against true labels (labels
    only score; they reach no module). ``prefix`` names the columns (default: none)."""

    def __init__(self, labels, module, message="assignments", prefix=""):
        self.labels, self.module, self.message, self.prefix = np.asarray(labels), module, message, prefix

    def __call__(self, round_index, outboxes):
        assignments = outboxes[self.module][self.message]
        return {f"{self.prefix}{k}": v for k, v in clustering_metrics(self.labels, assignments).items()}


@dataclass
class GraphResult:
    graph: Graph
    rounds: List[Dict[str, Any]]  # metrics per round
    outboxes: List[Dict[str, Dict[str, Any]]]  # every module's outbox per round


def _load_checkpoint(path):
    """A checkpoint written by :func:`run` (a trusted file of one's own run: it holds pickled
    messages, so it is read with ``weights_only=False``)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise RunError(f"Cannot read {path}: it is damaged ({type(exc).__name__}); start the run again "
                       "(--overwrite).") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path} was written by another version of vaegmm; start the run again (--overwrite).")
    return checkpoint


class GraphDirectory:
    """The run directory of :func:`run`: ``graph.json``, ``round_<r>/<module>/`` (each module's
    :meth:`Module.save`), ``metrics.json`` and ``checkpoint.pt``. A system with a layout of its own
    subclasses it (:meth:`write_round`, :attr:`files`) or passes an object with the same methods.

    Parameters
    ----------
    path : path
    files : names of further files and folders a subclass writes here (removed by ``overwrite``)
    """

    def __init__(self, path, files=()):
        self.path, self.files = Path(path), tuple(files)

    def prepare(self, description, rounds, overwrite, resume):
        """Check the directory and start the run (refusing to replace a run unless
        ``overwrite``); return the checkpoint to resume from (None to start afresh)."""
        path, saved = self.path, self.path / "graph.json"
        if resume:
            if not saved.exists():
                raise RunError(f"{path} holds no run of a graph (no graph.json); start one without resume.")
            if _saved_description(saved) != description:
                raise RunError(f"Cannot resume {path} with other settings than it was started with; resume with the "
                               "saved settings or start a new run in another directory.")
            checkpoint = path / "checkpoint.pt"
            return _load_checkpoint(checkpoint) if checkpoint.exists() else None
        found = path.exists() and [child for child in path.iterdir()
                                   if child.name in _RUN_FILES + self.files or child.name.startswith(_ROUND_PREFIX)]
        if found and not overwrite:
            if not saved.exists() or _saved_description(saved) != description:
                raise RunError(f"{path} already holds a different run; choose another output directory or pass "
                               "--overwrite (overwrite=True) to replace it.")
            checkpoint = path / "checkpoint.pt"
            if checkpoint.exists() and _load_checkpoint(checkpoint)["round"] == rounds:
                raise RunComplete(f"{path} already holds this run, finished ({rounds} "
                                  f"round{'s' if rounds != 1 else ''}); nothing was changed. Pass --overwrite "
                                  "(overwrite=True) to train it again.")
            raise RunError(f"{path} holds an interrupted run of these settings; continue it with --resume "
                           "(resume=True), or pass --overwrite (overwrite=True) to start it again.")
        path.mkdir(parents=True, exist_ok=True)
        for child in path.iterdir():
            if child.name in _RUN_FILES + self.files or child.name.startswith(_ROUND_PREFIX) or child.name == "figures":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        write_json(saved, description)
        return None

    def save_checkpoint(self, state):
        write_file(self.path / "checkpoint.pt", lambda f: torch.save(state, f))

    def write_round(self, round_index, outboxes, metrics, graph):
        """A finished round's files: each module's artifacts, and metrics.json."""
        for module in graph.modules:
            folder = self.path / f"{_ROUND_PREFIX}{round_index}" / module.name
            folder.mkdir(parents=True, exist_ok=True)
            module.save(folder, outboxes[module.name])
        write_json(self.path / "metrics.json", {"rounds": metrics})


def _saved_description(path):
    """graph.json at ``path`` as this version writes it: earlier versions recorded each shipped
    module's whole TrainConfig, where it now records the module's own config
    (:func:`vaegmm.config.module_config`), so that their runs still resume or report finished."""
    description = json.loads(path.read_text())
    if isinstance(description, dict) and isinstance(description.get("modules"), list):
        description["modules"] = [{**entry, "config": module_config(entry)} if isinstance(entry, dict) else entry
                                  for entry in description["modules"]]
    return description


def read_settings(run_dir):
    """The run-wide ``settings`` a run directory's graph.json was started with."""
    path = Path(run_dir) / "graph.json"
    if not path.exists():
        raise RunError(f"{run_dir} holds no run of a graph (no graph.json); give the directory of a run.")
    try:
        return json.loads(path.read_text())["settings"]
    except (OSError, ValueError, KeyError) as exc:
        raise RunError(f"Cannot read {path} ({exc}); the run directory is damaged.") from None


def spawned_seeds(seed, rounds, n_modules):
    """The default seeds: per round a child of ``SeedSequence(seed)``, per module a child of that."""
    return [child.spawn(n_modules) for child in np.random.SeedSequence(seed).spawn(rounds)]


def run(graph, rounds, *, seed=0, run_dir=None, resume=False, overwrite=False, observers=(), progress=True,
        log: Optional[Callable[[str], None]] = print, stop_requested=None, settings=None, directory=None,
        formatter=None, seeds=None, distributed=None):
    """Run ``rounds`` rounds of ``graph``: each round, every module's step in order.

    Parameters
    ----------
    graph : Graph
    rounds : int
    seed : int
        Every module's seed of every round is spawned from it.
    run_dir : path, default=None
        The run directory (:class:`GraphDirectory`); nothing is written if None (and no
        ``directory``).
    resume : bool
        Continue the interrupted run in the directory from its checkpoint.
    overwrite : bool
        Replace a run already in the directory (refused otherwise).
    observers : callables ``(round, outboxes) -> dict``
        Score each round (e.g. :class:`LabelScore`); their dicts join the round's metrics.
    progress : bool
        Passed to the modules' steps (tqdm bars).
    log : callable or None
        Receives one line per round.
    stop_requested : callable, default=None
        Polled between steps and inside long ones; True stops the run (KeyboardInterrupt) with its
        last checkpoint kept.
    settings : dict, default=None
        Run-wide settings written into graph.json beside the graph (a resume must match them).
    directory : object, default=None
        The run directory's handler instead of ``GraphDirectory(run_dir)``: a subclass of
        :class:`GraphDirectory`, or any object with its methods ``prepare``, ``save_checkpoint``
        and ``write_round``, for a system with a layout of its own.
    formatter : callable ``(metrics row) -> str``, default=None
        The log line of a round (default: every metric, by name).
    seeds : callable ``(seed, rounds, n_modules) -> [[SeedSequence per module] per round]``, default=None
        The seeds of every round and module (default :func:`spawned_seeds`).
    distributed : vaegmm.distributed.Context, default=None
        One rank of a ``torch.distributed`` run: every rank runs every step (the modules shard
        their work); rank 0 alone writes, logs and reads the checkpoint, which it sends the others.

    Returns
    -------
    GraphResult
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}.")
    if not graph.modules:
        raise ValueError("The graph has no modules; add some with Graph.add.")
    if directory is None and run_dir is not None:
        directory = GraphDirectory(run_dir)
    if resume and directory is None:
        raise ValueError("resume=True needs the run_dir of the run to continue.")
    from .distributed import SINGLE

    context = distributed if distributed is not None else SINGLE
    if not context.is_main:  # rank 0 alone writes and logs
        directory, log = None, None
    description = {"rounds": rounds, "seed": seed, "settings": settings, **graph.describe()}
    description = json.loads(json.dumps(description))  # as graph.json will read back
    polled = stop_requested or (lambda: False)
    stop_asked = (lambda: context.any(polled())) if context.active else polled
    checkpoint = failure = None
    if directory is not None:
        try:
            checkpoint = directory.prepare(description, rounds, overwrite, resume)
        except Exception as exc:  # a finished or different run: distributed, every rank must hear it
            if not context.active:
                raise
            failure = exc
    if context.active:
        failure = context.broadcast_object(failure)
        if failure is not None:
            raise failure
    if resume and context.active:
        checkpoint = context.broadcast_object(checkpoint)

    seeds = (seeds or spawned_seeds)(seed, rounds, len(graph.modules))
    latest, history, metrics = {}, [], []  # latest outbox per module; outboxes per round; metrics per round
    first_round = first_module = 0
    in_step = None
    if checkpoint is not None:
        for module in graph.modules:
            module.restore(checkpoint["states"][module.name])
        latest, history, metrics = checkpoint["latest"], checkpoint["history"], checkpoint["metrics"]
        first_round, first_module, in_step = checkpoint["round"], checkpoint["next"], checkpoint.get("in_step")
        if log is not None:
            where = ("all rounds are done" if first_round == rounds
                     else f"round {first_round}, {graph.modules[first_module].name}")
            log(f"resuming {getattr(directory, 'path', '')}: {where}")

    def save_checkpoint(round_index, next_module, partial, seconds, progress_state=None):
        if directory is None:
            return
        state = {"format": CHECKPOINT_FORMAT, "round": round_index, "next": next_module,
                 "states": {m.name: m.state() for m in graph.modules}, "latest": latest, "partial": partial,
                 "history": history, "metrics": metrics, "seconds": seconds, "in_step": progress_state}
        directory.save_checkpoint(state)

    for round_index in range(first_round, rounds):
        started = time.perf_counter()
        round_outboxes = {}
        resuming = checkpoint is not None and round_index == first_round
        if resuming:
            round_outboxes = dict(checkpoint["partial"])
            started -= checkpoint["seconds"]
        first = first_module if resuming else 0
        for index in range(first, len(graph.modules)):
            module = graph.modules[index]
            if (round_index, index) != (first_round, first) and stop_asked():  # not before any step has run
                raise KeyboardInterrupt

            def save(progress_state, index=index, round_outboxes=round_outboxes, round_index=round_index,
                     started=started):
                save_checkpoint(round_index, index, round_outboxes, time.perf_counter() - started, progress_state)

            context_resume = in_step if resuming and index == first_module else None
            alone = module.rank0_only and context.active and context.world_size > 1
            step_context = StepContext(round_index, seeds[round_index][index], progress,
                                       (lambda: False) if alone else stop_asked, context_resume, save)
            if alone:  # rank 0 steps, the others receive its outbox
                outbox = module.step(graph.inbox(module.name, latest), step_context) if context.is_main else None
                outbox = context.broadcast_object(outbox)
            else:
                outbox = module.step(graph.inbox(module.name, latest), step_context)
            if not isinstance(outbox, dict):
                raise TypeError(f"Module {module.name!r} returned {type(outbox).__name__} from step; return a dict "
                                "of messages.")
            latest[module.name] = outbox
            round_outboxes[module.name] = outbox
            save_checkpoint(round_index, index + 1, round_outboxes, time.perf_counter() - started)
        seconds = time.perf_counter() - started
        row = {"round": round_index}
        for observer in observers:
            row.update(observer(round_index, round_outboxes))
        for module in graph.modules:
            for key, value in module.summary(round_outboxes[module.name]).items():
                row[f"{module.name}/{key}"] = value
        row["seconds"] = seconds
        metrics.append(row)
        history.append(round_outboxes)
        if directory is not None:
            directory.write_round(round_index, round_outboxes, metrics, graph)
            save_checkpoint(round_index + 1, 0, {}, 0.0)
        if log is not None:
            log((formatter or format_row)(row))
        if stop_asked():
            raise KeyboardInterrupt
    return GraphResult(graph, metrics, history)


def format_row(row):
    """One line of a round's metrics."""
    parts = [f"round {row['round']}:"]
    for key, value in row.items():
        if key in ("round", "seconds"):
            continue
        parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    parts.append(f"({row['seconds']:.1f} s)")
    return "  ".join(parts)
