"""The run directory: what a training run writes and what decode/plot commands read.

Layout::

    RUN/
      config.json              TrainConfig that reproduces the run
      metrics.json             {"iterations": [{"iteration", "accuracy", "ari", "nmi", "elbo", ...}]}
      labels.npy               true labels (only when the data have them; evaluation only)
      iteration_<i>/
        vae.pt                 {"state_dict", "vae_config", "optimizer", "image_shape"}
        gmm.npz                mu (K, L), Lambda (K, L, L), pi (K,)
        latents.npy            (N, L) latents sent to the GMM
        assignments.npy        (N,) cluster of each datum in the last sweep
        prior.npz              the prior sent to the next round: mean (N, L), var (N, L) or precision (N, L, L)
        history.json           ELBO per epoch, clustering metrics per sweep
        embedding.npy          with manifold = umap: (N, d) UMAP embedding of the latents, what the GMM
                               clustered (gmm.npz then holds the GMM of the embedding)
        manifold.pkl           with manifold = umap: the fitted umap.UMAP, a pickle (predict's transform);
                               unpickling runs code, so read it only from runs you trust (your own)
        latent_clusters.npz    with manifold = umap: the clusters' moments of the latents, weighted by
                               the GMM's responsibilities (one-hot with prior_from = last): mu (K, L),
                               covariance (K, L, L), pi (K,); what the figures decode
      checkpoint.pt            state to continue an interrupted run (`vaegmm train --resume RUN`)
      figures/                 PNG figures

Every file is written to a temporary name and renamed, so an interrupted write never leaves
a half-written file under the final name.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .gmm import GibbsGMM
from .vae import VAE

__all__ = ["RunError", "RunComplete", "RunDirectory", "atomic_write_bytes", "write_json", "write_file",
           "save_vae", "load_vae_file"]

_ROUND = re.compile(r"^iteration_(\d+)$")
_RUN_FILES = ("config.json", "metrics.json", "labels.npy", "images.npy", "checkpoint.pt", "report.html",
              "report.md")
CHECKPOINT_FORMAT = 2  # bump when the checkpoint's contents change (2: the engine's, vaegmm.engine)


class RunError(ValueError):
    """A run directory that cannot be used as asked; the message says why."""


class RunComplete(RunError):
    """The run asked for is already in the directory, finished: there is nothing to do."""


def atomic_write_bytes(path, payload):
    """Write ``payload`` to ``path`` so that a reader sees the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _to_bytes(write):
    """The bytes that ``write(file_object)`` produces."""
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue()


def write_file(path, write):
    """Write, atomically, what ``write(file_object)`` produces (``np.save``, ``torch.save``, ...)."""
    atomic_write_bytes(path, _to_bytes(write))


def save_vae(path, vae, optimizer, image_shape):
    """Write a VAE's ``vae.pt``: its weights, constructor arguments, optimizer and image shape."""
    checkpoint = {
        "state_dict": {k: v.detach().cpu() for k, v in vae.state_dict().items()},
        "vae_config": vae.config(),
        "optimizer": optimizer.state_dict(),
        "image_shape": list(image_shape),
    }
    write_file(path, lambda f: torch.save(checkpoint, f))


def load_vae_file(path, device="cpu"):
    """(VAE in eval mode, image_shape) from a ``vae.pt`` of :func:`save_vae`."""
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    vae = VAE(**checkpoint["vae_config"]).to(device)
    vae.load_state_dict(checkpoint["state_dict"])
    return vae.eval(), tuple(checkpoint["image_shape"])


def write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


class RunDirectory:
    """Reads and writes one run directory (see the module docstring for the layout)."""

    def __init__(self, path):
        self.path = Path(path)

    # -- paths ---------------------------------------------------------------------------------
    def round_path(self, iteration):
        return self.path / f"iteration_{iteration}"

    @property
    def figures(self):
        path = self.path / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def iterations(self):
        """Completed rounds (those with every file written), sorted."""
        if not self.path.is_dir():
            return []
        done = []
        for child in self.path.iterdir():
            match = _ROUND.match(child.name)
            if match and all((child / name).exists() for name in ("vae.pt", "gmm.npz", "history.json")):
                done.append(int(match.group(1)))
        return sorted(done)

    # -- writing -------------------------------------------------------------------------------
    def check_replaceable(self, config, overwrite=False):
        """Refuse to start ``config``'s run here over a run already here, unless ``overwrite``.

        A different run, or an interrupted run of the same config, raises :class:`RunError`
        (the latter says to resume it); the same run, finished, raises :class:`RunComplete`.
        Only ``overwrite`` lets :meth:`start` delete a run's files.
        """
        existing = self.path / "config.json"
        if overwrite:
            return
        if not existing.exists():
            found = self._run_files()
            if found:
                raise RunError(
                    f"{self.path} holds a run's files ({', '.join(sorted(p.name for p in found))}) "
                    "but no config.json; choose another output directory or pass --overwrite (overwrite=True)."
                )
            return
        try:
            same = json.loads(existing.read_text()) == config.to_dict()
        except (OSError, ValueError):
            same = False
        if not same:
            raise RunError(
                f"{self.path} already holds a different run; choose another output directory "
                "or pass --overwrite (overwrite=True) to replace it."
            )
        if self.is_finished(config):
            raise RunComplete(
                f"{self.path} already holds this run, finished ({config.mutual_iterations} "
                f"round{'s' if config.mutual_iterations != 1 else ''}); nothing was "
                "changed. Pass --overwrite (overwrite=True) to train it again."
            )
        raise RunError(
            f"{self.path} holds an interrupted run of this config; continue it with `vaegmm train --resume "
            f"{self.path}` (resume=True), or pass --overwrite (overwrite=True) to start it again."
        )

    def is_finished(self, config):
        """Whether every round of ``config`` is saved here, with its metrics."""
        rounds = list(range(config.mutual_iterations))
        return self.iterations() == rounds and len(self.load_metrics()) == len(rounds)

    def start(self, config, overwrite=False):
        """Begin a run here: check (:meth:`check_replaceable`), remove the replaced run's files
        (only with ``overwrite``), write config.json."""
        self.check_replaceable(config, overwrite)
        self.clear()
        self.save_config(config)

    def _run_files(self):
        """The files and folders here that a run writes (nothing else a user may keep here)."""
        if not self.path.is_dir():
            return []
        return [child for child in self.path.iterdir()
                if (child.is_dir() and (_ROUND.match(child.name) or child.name == "figures"))
                or (child.is_file() and child.name in _RUN_FILES)]

    def clear(self):
        """Delete the files a run writes (and nothing else a user may keep here)."""
        for child in self._run_files():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def save_config(self, config):
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / "config.json", config.to_dict())

    def save_labels(self, labels):
        atomic_write_bytes(self.path / "labels.npy", _to_bytes(lambda f: np.save(f, labels)))

    def save_images(self, images):
        """Keep the training images (N, H, W) in [0, 1], as 8-bit, for runs whose images cannot
        be reloaded from config.json (the naming game's rotated view): the figures read them."""
        pixels = np.round(np.clip(np.asarray(images), 0.0, 1.0) * 255).astype(np.uint8)
        atomic_write_bytes(self.path / "images.npy", _to_bytes(lambda f: np.save(f, pixels)))

    def load_images(self):
        """The images of :meth:`save_images` as float32 in [0, 1], or None if none were kept."""
        path = self.path / "images.npy"
        return _read(path, np.load).astype(np.float32) / 255.0 if path.exists() else None

    def save_metrics(self, rows):
        write_json(self.path / "metrics.json", {"iterations": rows})

    def save_round(self, iteration, *, vae, optimizer, image_shape, gmm, latents, assignments, history, prior=None,
                   embedding=None, manifold=None, latent_clusters=None):
        """Write one round's VAE, GMM parameters, latents, assignments, the prior it sends to
        the next round (``prior``: dict of arrays "mean" and "var" or "precision") and history;
        with a manifold, also its ``embedding`` (N, d), the fitted ``manifold`` (pickled) and the
        ``latent_clusters`` ({"mu", "covariance", "pi"})."""
        folder = self.round_path(iteration)
        folder.mkdir(parents=True, exist_ok=True)
        save_vae(folder / "vae.pt", vae, optimizer, image_shape)
        atomic_write_bytes(
            folder / "gmm.npz",
            _to_bytes(lambda f: np.savez(f, mu=gmm.means_, Lambda=gmm.precisions_, pi=gmm.weights_)),
        )
        atomic_write_bytes(folder / "latents.npy", _to_bytes(lambda f: np.save(f, latents)))
        atomic_write_bytes(folder / "assignments.npy", _to_bytes(lambda f: np.save(f, assignments)))
        if prior is not None:
            atomic_write_bytes(folder / "prior.npz", _to_bytes(lambda f: np.savez(f, **prior)))
        if embedding is not None:
            atomic_write_bytes(folder / "embedding.npy", _to_bytes(lambda f: np.save(f, embedding)))
        if manifold is not None:
            atomic_write_bytes(folder / "manifold.pkl", pickle.dumps(manifold, protocol=pickle.HIGHEST_PROTOCOL))
        if latent_clusters is not None:
            atomic_write_bytes(folder / "latent_clusters.npz", _to_bytes(lambda f: np.savez(f, **latent_clusters)))
        # history.json last: its presence marks the round complete (see iterations()).
        write_json(folder / "history.json", history)

    def save_checkpoint(self, state):
        """Write ``checkpoint.pt``: everything needed to continue the run (the engine's state:
        every module's state and the messages in flight, :func:`vaegmm.engine.run`)."""
        state = {**state, "format": CHECKPOINT_FORMAT}
        atomic_write_bytes(self.path / "checkpoint.pt", _to_bytes(lambda f: torch.save(state, f)))

    # -- reading -------------------------------------------------------------------------------
    def check_resumable(self, config):
        """Raise RunError unless this directory holds a run of exactly ``config`` (naming the
        keys that differ)."""
        differences = self.load_config().differences(config)
        if differences:
            raise RunError(
                f"Cannot resume {self.path} with a different config: {', '.join(differences)}; "
                "resume with the saved settings or start a new run in another directory."
            )

    def load_checkpoint(self, config):
        """The checkpoint of an interrupted run of ``config`` (None if it saved none yet).

        Raises RunError if the directory holds no run, a run of another config (naming the
        differing keys), or a checkpoint this version cannot read.
        """
        self.check_resumable(config)
        path = self.path / "checkpoint.pt"
        if not path.exists():
            return None
        # The run's own file: it holds pickled messages (the GMM, priors), so not weights_only.
        state = _read(path, lambda p: torch.load(p, map_location="cpu", weights_only=False))
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"{path} was written by an incompatible version of vaegmm; start a new run.")
        return state

    def _require_round(self, iteration):
        if not self.path.is_dir():
            raise RunError(f"Run directory {self.path} does not exist.")
        available = self.iterations()
        if not available:
            raise RunError(
                f"{self.path} holds no completed round; train one with `vaegmm train --out {self.path}`."
            )
        if iteration not in available:
            raise RunError(
                f"Round {iteration} is not in {self.path}; available rounds: {', '.join(map(str, available))}."
            )
        return self.round_path(iteration)

    def load_config(self):
        path = self.path / "config.json"
        if not path.exists():
            raise RunError(f"{self.path} is not a run directory (no config.json).")
        return TrainConfig.from_json(path)

    def load_metrics(self):
        path = self.path / "metrics.json"
        if not path.exists():
            return []
        return _read(path, lambda p: json.loads(p.read_text())["iterations"])

    def load_labels(self):
        path = self.path / "labels.npy"
        return _read(path, np.load) if path.exists() else None

    def load_vae(self, iteration, device="cpu"):
        """(VAE in eval mode, image_shape) of a round."""
        return _read(self._require_round(iteration) / "vae.pt", lambda path: load_vae_file(path, device))

    def load_gmm(self, iteration):
        """A GibbsGMM holding a round's final parameters (for predict / sample)."""

        def read(path):
            with np.load(path) as params:
                return GibbsGMM.from_parameters(params["mu"], params["Lambda"], params["pi"])

        return _read(self._require_round(iteration) / "gmm.npz", read)

    def load_array(self, iteration, name):
        """``latents``, ``assignments`` or (with a manifold) ``embedding`` of a round."""
        return _read(self._require_round(iteration) / f"{name}.npy", np.load)

    def has_manifold(self, iteration):
        """Whether the round's GMM clustered a manifold embedding (its folder holds embedding.npy)."""
        return (self._require_round(iteration) / "embedding.npy").exists()

    def load_embedding(self, iteration):
        """The round's manifold embedding (N, d), or None for a run without a manifold."""
        return self.load_array(iteration, "embedding") if self.has_manifold(iteration) else None

    def load_manifold(self, iteration):
        """The round's fitted manifold (``umap.UMAP``) from ``manifold.pkl``.

        This unpickles: read only run directories you wrote yourself (or trust), never one
        received from elsewhere. Unpickling needs umap-learn installed.
        """
        from .manifold import import_umap

        path = self._require_round(iteration) / "manifold.pkl"
        if not path.exists():
            raise RunError(f"Round {iteration} of {self.path} has no manifold.pkl; the run was not trained with "
                           "manifold = umap.")
        import_umap()  # the install sentence, rather than an unpickling error, when it is missing
        return _read(path, lambda p: pickle.loads(p.read_bytes()))

    def load_latent_gmm(self, iteration):
        """The round's clusters as Gaussians in the VAE's latent space (what figures decode): the GMM
        itself, or, with a manifold, the clusters' responsibility-weighted moments of the latents."""
        path = self._require_round(iteration) / "latent_clusters.npz"
        if not path.exists():
            return self.load_gmm(iteration)

        def read(path):
            with np.load(path) as params:
                covariance = params["covariance"]
                precision = np.linalg.inv(covariance)
                return GibbsGMM.from_parameters(params["mu"], 0.5 * (precision + precision.transpose(0, 2, 1)),
                                                np.maximum(params["pi"], np.finfo(np.float64).tiny))

        return _read(path, read)

    def load_prior(self, iteration):
        """The prior a round sent to the next one, as {"mean", "var" or "precision"}; None if
        the run did not save it (runs of vaegmm before prior.npz existed)."""
        path = self._require_round(iteration) / "prior.npz"
        if not path.exists():
            return None
        return _read(path, lambda p: dict(np.load(p)))

    def load_history(self, iteration):
        return _read(self._require_round(iteration) / "history.json", lambda p: json.loads(p.read_text()))


def _read(path, reader):
    """``reader(path)``, with any failure to read or parse turned into one RunError sentence."""
    try:
        return reader(path)
    except Exception as exc:  # torch, numpy and json raise many types for a damaged file
        raise RunError(
            f"Cannot read {path}: it is damaged or was written by an incompatible version of vaegmm ({exc})."
        ) from None
