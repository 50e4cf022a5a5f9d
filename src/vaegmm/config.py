"""Configuration of a mutual-learning run: one dataclass, every field commented.

``config.json`` in a run directory is ``TrainConfig.to_dict()``; ``TrainConfig.from_dict``
rebuilds it and rejects unknown keys, so a saved config reproduces its run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Optional, Tuple, Union

__all__ = ["TrainConfig", "VAEConfig", "GMMConfig", "ManifoldConfig", "ConfigError", "REFERENCE", "module_config"]


# Values that runs saved by earlier versions (whose config.json lacks the key) were trained
# with, where they differ from today's defaults.
_BEFORE_KEY_EXISTED = {"prior_from": "last", "augment_rotation": 0.0, "augment_shift": 0.0,
                       "augment_scale": 0.0, "augment_target": "view", "prior_weight": None,
                       "gmm_prior": "fixed", "contrast_weight": 0.0, "gmm_report": "last",
                       "manifold": "none", "gmm_chains": 1, "joint_covariance": "full",
                       "encode_views": 0}


# The reference implementation's configuration (the README's "reference"), as changes to the
# defaults: TrainConfig(**REFERENCE). Everything not named here (K = 10, L = 12, MLP 784-256-L,
# Adam 1e-3, alpha, beta, W, nu, diagonal prior, encoder means sent) is the same as the defaults.
REFERENCE = {"batch_size": 10, "vae_epochs": 100, "round0_epochs": 100, "gmm_sweeps": 100, "mutual_iterations": 2,
             "prior_from": "last", "vae_init": "retrain", "gmm_init": "prior", "chain_init": "fresh",
             "augment_rotation": 0.0, "augment_shift": 0.0, "augment_scale": 0.0, "augment_target": "view",
             "kl_weight": 1.0, "prior_weight": None, "gmm_prior": "fixed", "gmm_report": "last",
             "gmm_chains": 1}


def _option(default, group, help, *, flag=None, shown=None, aliases=()):
    """A field with a CLI flag (the CLI is generated from these): its ``group`` in ``--help``,
    its ``help`` ("{default}" is replaced by the default, or by ``shown``), its ``flag`` name
    when it is not the field's (``--epochs`` for ``vae_epochs``), and older names the flag still
    answers to (``aliases``: ``--vae-iter``). A field without one is set on the command line with
    ``--set FIELD=VALUE`` only."""
    return dataclasses.field(default=default, metadata={"group": group, "help": help, "flag": flag, "shown": shown,
                                                        "aliases": tuple(aliases)})


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names it."""


def _as_dict(config):
    """A config dataclass's fields as JSON values (tuples as lists)."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(config).items()}


def _refuse_unknown(cls, values, what):
    """ConfigError naming the keys of ``values`` that are no field of ``cls``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"Unknown {what} keys: {', '.join(unknown)}; known keys are {', '.join(sorted(known))}.")


@dataclass
class TrainConfig:
    # --- data ---
    # "mnist5k", "digits", or a path to IDX files / .npz / .npy
    data: str = _option("mnist5k", "data",
        "{builtin}, or a path to IDX files / .npz / .npy (default: {default}). Give it once per modality "
        "for multimodal categories (train, evaluate: rows paired), or one two-view set: {two_view}")
    # train on a random subset of this size (None: all)
    max_samples: Optional[int] = _option(None, "data",
        "train on a random subset of this size", shown="all")
    # --- mutual learning ---
    # rounds in all: round 0 (N(0, I) prior) + rounds with the GMM prior
    mutual_iterations: int = _option(2, "mutual learning",
        "rounds in all, round 0 included (default: {default})", flag="rounds", aliases=("mutual_iterations",))
    # VAE epochs of every round after round 0; None follows the manifold: 200, or 100 with manifold="umap"
    vae_epochs: Optional[int] = _option(None, "mutual learning",
        "VAE epochs of each round after round 0 (default: {default})", flag="epochs", aliases=("vae_iter",),
        shown="200; 100 with --manifold umap")
    # VAE epochs of round 0; None: half of vae_epochs (rounded up), or twice vae_epochs with
    #   manifold="umap". Without the manifold, round 0 only has to give the GMM a first partition and
    #   the last round's retrained VAE is the one scored; with it, round 0's partition of the
    #   embedding is the teacher that later rounds fine-tune the VAE towards
    round0_epochs: Optional[int] = _option(None, "mutual learning",
        "VAE epochs of round 0 (default: {default})", shown="half of --epochs; twice it with --manifold umap")
    # Gibbs sweeps per round
    gmm_sweeps: int = _option(100, "mutual learning",
        "Gibbs sweeps per round (turns of the naming game) (default: {default})", flag="sweeps",
        aliases=("gmm_iter",))
    send: str = "mean"  # latent sent to the GMM: "mean" of q(x|o) or a reparameterised "sample"
    prior_covariance: str = "diag"  # prior sent to the VAE: "diag" of Lambda^-1 or "full" Lambda
    # each round after round 0: "retrain" a fresh VAE (the reference) or "warm"-start (fine-tune) the
    #   last one; None follows the manifold: warm with manifold="umap" (chosen on the selection set), else retrain
    vae_init: Optional[str] = _option(None, "mutual learning",
        "each round after round 0 retrains a fresh VAE (retrain) or fine-tunes the last one (warm) "
        "(default: {default})", shown="warm with --manifold umap, else retrain")
    # prior per datum: the Gaussian moment-matched to its
    #   "responsibilities"-weighted mixture of the last sweep's clusters (chosen by the study in
    #   docs/accuracy.md), the "last" sweep's cluster (reference), the "average" over the last
    #   prior_sweeps sweeps, or the last sweep's whole "mixture" (pi, mu, Sigma shared by every
    #   datum; the VAE's KL recomputes each datum's responsibilities from its current latent)
    prior_from: str = _option("responsibilities", "mutual learning",
        "prior of each datum from the chain's last sweep, the average of its last prior_sweeps sweeps, "
        "its responsibilities, or the last sweep's whole mixture (default: {default})")
    prior_sweeps: int = 10  # sweeps averaged by prior_from="average"
    chain_init: str = "fresh"  # each round's Gibbs chain: "fresh" (gmm_init) or from the "previous" assignments
    # --- VAE ---
    # L
    latent_dim: int = _option(12, "VAE",
        "latent dimension L (default: {default})")
    # encoder/decoder: "mlp", or "conv" (two stride-2 convolutions, then hidden_dims)
    architecture: str = _option("mlp", "VAE",
        "encoder/decoder (default: {default})")
    # fully connected encoder widths (decoder reversed)
    hidden_dims: Tuple[int, ...] = _option((256,), "VAE",
        "fully connected encoder widths, comma-separated (default: {default})")
    # channels of the two convolutions of "conv"
    conv_channels: Tuple[int, int] = _option((16, 32), "VAE",
        "channels of the two convolutions of --architecture conv (default: {default})")
    # the VAE trains on random views: rotations up to this many degrees,
    augment_rotation: float = _option(15.0, "VAE",
        "train the VAE on random views rotated by up to this many degrees (default: {default})")
    # shifts up to this fraction of the image size,
    augment_shift: float = _option(0.12, "VAE",
        "... shifted by up to this fraction of the image size (default: {default})")
    # and zooms by up to this fraction (all 0: the images themselves);
    #   the GMM always clusters the clean images' latents
    augment_scale: float = _option(0.1, "VAE",
        "... zoomed by up to this fraction (default: {default})")
    encode_views: int = 0  # the latents sent on (to the manifold or the GMM): the encoder means of the
    #   clean image averaged with those of this many random views of it (the training views' ranges;
    #   test-time augmentation: a code of what all views share); 0: the clean image's alone
    augment_target: str = "clean"  # with augmentation, the decoder reconstructs the "clean" image (a
    #   denoising VAE: the latent keeps what all views of an image share) or the "view"
    contrast_weight: float = 0.0  # with augmentation, two views per image and step, and this weight on
    #   their contrastive loss (NT-Xent of SimCLR on the encoder means: an image's two views together,
    #   apart from the batch's other images); 0: one view, no contrast
    contrast_temperature: float = 0.5  # the NT-Xent temperature
    # minibatch size of the VAE (chosen by a 3-seed study, see README)
    batch_size: int = _option(256, "VAE",
        "VAE minibatch size (default: {default})")
    # Adam learning rate
    lr: float = _option(0.001, "VAE",
        "Adam learning rate (default: {default})")
    # weight of the KL term in the VAE loss (1: the ELBO)
    kl_weight: float = _option(1.0, "VAE",
        "weight of the KL term (default: {default})")
    # KL weight in the rounds with the GMM's prior (None: kl_weight)
    prior_weight: Optional[float] = _option(None, "VAE",
        "weight of the KL term in the rounds with the GMM's prior (default: {default})", shown="as --kl-weight")
    # --- GMM (Gauss–Wishart prior, SPEC §1) ---
    # K, or "auto": the GMM finds K (a sparse overfitted mixture)
    n_clusters: Union[int, str] = _option(10, "GMM",
        "number of clusters K, or auto: the GMM finds K (default: {default})", flag="clusters")
    # the upper bound on K with n_clusters="auto"
    max_clusters: int = _option(30, "GMM",
        "upper bound on K with --clusters auto (default: {default})")
    # symmetric Dirichlet concentration; None: 0.3, or 0.01 / max_clusters
    #   with n_clusters="auto" (sparse, so that superfluous clusters empty)
    alpha: Optional[float] = _option(None, "GMM",
        "Dirichlet concentration (default: {default})", shown="0.3; 0.01 / --max-clusters with --clusters auto")
    # prior precision scale of the cluster means
    beta: float = _option(1.0, "GMM",
        "mean precision scale (default: {default})")
    # W = wishart_scale * I with gmm_prior="fixed" (the reference's)
    wishart_scale: float = _option(0.55, "GMM",
        "W = c * I with --gmm-prior fixed (default: {default})")
    # nu; None means the dimension clustered (latent_dim, or manifold_dim)
    wishart_dof: Optional[float] = _option(None, "GMM",
        "Wishart degrees of freedom nu (default: {default})", shown="the dimension clustered")
    # chain start: "em" (from the most likely of 10 EM fits), a "prior" draw (reference),
    #   or "kmeans++" means
    gmm_init: str = _option("em", "GMM",
        "chain start: prior draw, k-means++ means, or the most likely of 10 EM fits (default: {default})")
    # Gauss-Wishart prior: scaled to each round's latents, "data" (m = their mean,
    #   W^-1 = nu Cov(x) / K^(2/L), Fraley & Raftery 2007), "data-axis" (W^-1 = nu Cov(x) / K^2: tighter clusters,
    #   chosen for --manifold umap's embedding), or "fixed" (m = 0, W = wishart_scale * I, the reference)
    #   None follows the manifold: data-axis with manifold="umap", else data
    gmm_prior: Optional[str] = _option(None, "GMM",
        "Gauss-Wishart prior: scaled to each round's latents (data: clusters a K-th of their volume; "
        "data-axis: a K-th along every axis), or the reference's m = 0, W = --wishart-scale I (fixed) "
        "(default: {default})", shown="data-axis with --manifold umap, else data")
    # the state a round reports and sends: "map", the most probable sweep's
    #   parameters (joint log posterior; labels never look) with each datum's most probable cluster
    #   under them, or "last", the last sweep's draw (the reference)
    gmm_report: str = _option("map", "GMM",
        "the state a round reports and sends: the most probable sweep's (map; labels never look) or the "
        "last sweep's draw (last) (default: {default})")
    # independent Gibbs chains per round; the one gmm_keep scores highest is kept (unsupervised:
    #   labels never choose)
    gmm_chains: int = _option(4, "GMM",
        "independent Gibbs chains per round, the most probable kept (default: {default})")
    # which chain gmm_chains keeps: the one whose reported state has the highest "joint" log
    #   posterior log p(z, pi, mu, Lambda | X), or whose reported assignments have the highest
    #   "collapsed" log p(z | X) (pi, mu and Lambda integrated out; not confirmed, docs/accuracy.md)
    gmm_keep: str = "joint"
    # multimodal categories: each category's covariance over the concatenated latents, "full" or
    #   "block"-diagonal (the modalities independent given the category, one Wishart per modality;
    #   chosen on mnist5k-a-rotated and mnist5k-a-partner, docs/multimodal.md)
    joint_covariance: str = _option("block", "GMM",
        "multimodal categories: a category's covariance over the modalities' latents, full, or block-"
        "diagonal (modalities independent given the category) (default: {default})")
    # --- manifold (VAE -> manifold -> GMM, N2D's step; vaegmm.manifold) ---
    # "none": the GMM clusters the latents; "umap": it clusters their UMAP embedding
    #   (umap-learn), and the message back is each datum's prior from the clusters' moments of the
    #   latents weighted by the GMM's responsibilities (prior_from "responsibilities" or "last" only).
    #   None: umap where it runs (train and evaluate on one modality in one process, the naming game),
    #   none for multimodal categories and under torchrun (chosen on the selection set; docs/accuracy.md)
    manifold: Optional[str] = _option(None, "manifold",
        "none: the GMM clusters the latents; umap: it clusters their UMAP embedding (N2D), and its "
        "responsibilities come back as each image's prior in the latent space (--prior-from "
        "responsibilities or last) (default: {default})",
        shown="umap; none for multimodal categories and under torchrun")
    # UMAP's n_components d (N2D's settings in this group)
    manifold_dim: int = _option(10, "manifold",
        "UMAP's n_components, the dimensions the GMM clusters (default: {default})")
    # UMAP's n_neighbors
    manifold_neighbors: int = _option(20, "manifold",
        "UMAP's n_neighbors (default: {default})")
    # UMAP's min_dist, in [0, 1]
    manifold_min_dist: float = _option(0.0, "manifold",
        "UMAP's min_dist, in [0, 1] (default: {default})")
    # --- run ---
    # seeds torch and NumPy; the same seed gives the same run on one device
    seed: int = _option(0, "run",
        "random seed (default: {default})")
    # "auto" (CUDA if available), "cpu", "cuda" or "cuda:N"
    device: str = _option("auto", "run",
        "auto, cpu, cuda or cuda:N (default: {default})")

    # Allowed values of the string options (a plain class constant: it has no annotation); the
    # CLI's choices are read from here.
    CHOICES = {
        "send": ("mean", "sample"),
        "prior_covariance": ("diag", "full"),
        "vae_init": ("retrain", "warm"),
        "gmm_init": ("prior", "kmeans++", "em"),
        "prior_from": ("last", "average", "responsibilities", "mixture"),
        "chain_init": ("fresh", "previous"),
        "architecture": ("mlp", "conv"),
        "augment_target": ("view", "clean"),
        "gmm_prior": ("data", "data-axis", "fixed"),
        "gmm_report": ("map", "last"),
        "gmm_keep": ("joint", "collapsed"),
        "joint_covariance": ("full", "block"),
        "manifold": ("none", "umap"),
    }

    # The fields whose None follows the manifold, and what it gives for each manifold. The GMM on a
    # UMAP embedding needs the per-axis prior (its clusters are far apart in many directions), and
    # the VAE then learns best trained long in round 0 (200 epochs; round0_epochs None is twice
    # vae_epochs with the manifold) and fine-tuned by the message after it (100 epochs), the same
    # 300 epochs in all (docs/accuracy.md, "The manifold module").
    FOLLOW_MANIFOLD = {
        "gmm_prior": {"none": "data", "umap": "data-axis"},
        "vae_init": {"none": "retrain", "umap": "warm"},
        "vae_epochs": {"none": 200, "umap": 100},
    }

    def __post_init__(self):
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        self.conv_channels = tuple(int(c) for c in self.conv_channels)
        self.validate()

    def validate(self):
        """Raise ConfigError naming the first unusable value."""
        positive_ints = ("mutual_iterations", "vae_epochs", "gmm_sweeps", "latent_dim", "batch_size", "n_clusters",
                         "max_clusters", "prior_sweeps", "gmm_chains", "manifold_dim", "manifold_neighbors")
        for name in positive_ints:
            if (name == "n_clusters" and self.n_clusters == "auto") or self._follows_manifold(name):
                continue
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer{' or auto' if name == 'n_clusters' else ''}, "
                                  f"got {value!r}.")
        round0 = self.round0_epochs
        if round0 is not None and (isinstance(round0, bool) or not isinstance(round0, int) or round0 < 1):
            raise ConfigError(f"round0_epochs must be a positive integer or None, got {self.round0_epochs!r}.")
        for name, upper in (("augment_rotation", 180.0), ("augment_shift", 1.0), ("augment_scale", 1.0)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < upper):
                raise ConfigError(f"{name} must be a number in [0, {upper:g}), got {value!r}.")
        for name in ("contrast_weight", "contrast_temperature"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf) or (
                    name == "contrast_temperature" and value == 0):
                raise ConfigError(f"{name} must be a {'positive' if name == 'contrast_temperature' else 'non-negative'} "
                                  f"number, got {value!r}.")
        if self.contrast_weight > 0 and not self.augments:
            raise ConfigError("contrast_weight > 0 needs random views (augment_rotation, augment_shift or "
                              "augment_scale above 0).")
        if isinstance(self.encode_views, bool) or not isinstance(self.encode_views, int) or self.encode_views < 0:
            raise ConfigError(f"encode_views must be a non-negative integer, got {self.encode_views!r}.")
        if self.encode_views and not self.augments:
            raise ConfigError("encode_views > 0 needs random views (augment_rotation, augment_shift or "
                              "augment_scale above 0).")
        if self.max_samples is not None and (not isinstance(self.max_samples, int) or self.max_samples < 1):
            raise ConfigError(f"max_samples must be a positive integer or None, got {self.max_samples!r}.")
        if any(h < 1 for h in self.hidden_dims):
            raise ConfigError(f"hidden_dims must be positive widths, got {self.hidden_dims}.")
        if len(self.conv_channels) != 2 or any(c < 1 for c in self.conv_channels):
            raise ConfigError(f"conv_channels must be two positive channel counts, got {self.conv_channels}.")
        if self.prior_from == "average" and self.prior_sweeps > self.gmm_sweeps:
            raise ConfigError(f"prior_sweeps = {self.prior_sweeps} exceeds gmm_sweeps = {self.gmm_sweeps}; "
                              "average over at most all sweeps.")
        for name in ("lr", "alpha", "beta", "wishart_scale"):
            value = getattr(self, name)
            if name == "alpha" and value is None:
                continue
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}.")
        if not (isinstance(self.kl_weight, (int, float)) and 0 <= self.kl_weight < math.inf):
            raise ConfigError(f"kl_weight must be a non-negative finite number, got {self.kl_weight!r}.")
        if self.prior_weight is not None and not (isinstance(self.prior_weight, (int, float))
                                                  and 0 <= self.prior_weight < math.inf):
            raise ConfigError(f"prior_weight must be a non-negative finite number or None, got {self.prior_weight!r}.")
        if self.lr >= 1.0:
            raise ConfigError(f"lr = {self.lr!r} is far above any useful Adam learning rate; use e.g. 1e-3.")
        gmm_dim, dim_name = ((self.manifold_dim, "manifold_dim") if self.manifold_used == "umap"
                             else (self.latent_dim, "latent_dim"))  # the dimension the GMM clusters
        if self.wishart_dof is not None and not gmm_dim - 1 < self.wishart_dof < math.inf:
            raise ConfigError(
                f"wishart_dof must exceed {dim_name} - 1 = {gmm_dim - 1}, got {self.wishart_dof!r}."
            )
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices and not self._follows_manifold(name) and not (
                    name == "manifold" and self.manifold is None):
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}.")
        if self.manifold_neighbors < 2:
            raise ConfigError(f"manifold_neighbors must be at least 2, got {self.manifold_neighbors!r}.")
        min_dist = self.manifold_min_dist
        if not (isinstance(min_dist, (int, float)) and not isinstance(min_dist, bool) and 0 <= min_dist <= 1):
            raise ConfigError(f"manifold_min_dist must be a number in [0, 1], got {min_dist!r}.")
        if self.manifold_used == "umap" and self.prior_from not in ("responsibilities", "last"):
            raise ConfigError(f"prior_from = {self.prior_from} is not supported with manifold = umap (the "
                              "default); use prior_from responsibilities or last, or manifold none.")

    def _follows_manifold(self, name):
        """True when field ``name`` is left None to follow the manifold (:attr:`FOLLOW_MANIFOLD`)."""
        return name in self.FOLLOW_MANIFOLD and getattr(self, name) is None

    def followed(self, name):
        """The value field ``name`` of :attr:`FOLLOW_MANIFOLD` stands for: its own, or the manifold's."""
        value = getattr(self, name)
        return self.FOLLOW_MANIFOLD[name][self.manifold_used] if value is None else value

    @property
    def manifold_used(self):
        """The manifold: ``manifold``, or with None umap (multimodal categories and torchrun runs
        replace None by none before they start: :meth:`without_default_manifold`)."""
        return "umap" if self.manifold is None else self.manifold

    def without_default_manifold(self):
        """This config with a default manifold (None) made ``"none"``: for the systems that run
        without one by default (multimodal categories, torchrun). An explicit manifold is kept."""
        return self.replace(manifold="none") if self.manifold is None else self

    @property
    def gmm_prior_used(self):
        """The GMM's prior form: ``gmm_prior``, or with None the manifold's (data-axis with UMAP, else data)."""
        return self.followed("gmm_prior")

    @property
    def vae_init_used(self):
        """How each round after round 0 starts its VAE: ``vae_init``, or with None the manifold's
        (warm with UMAP, else retrain)."""
        return self.followed("vae_init")

    @property
    def finds_k(self):
        """True when the GMM finds K itself (``n_clusters="auto"``)."""
        return self.n_clusters == "auto"

    @property
    def cluster_slots(self):
        """The clusters the GMM holds: n_clusters, or the bound max_clusters when it finds K."""
        return self.max_clusters if self.finds_k else self.n_clusters

    @property
    def round_epochs(self):
        """VAE epochs of each round after round 0: ``vae_epochs``, or with None the manifold's
        (200 without, 100 with UMAP)."""
        return self.followed("vae_epochs")

    @property
    def first_round_epochs(self):
        """VAE epochs of round 0: ``round0_epochs``, or half of :attr:`round_epochs` (rounded up),
        or twice it with a manifold."""
        if self.round0_epochs is not None:
            return self.round0_epochs
        return 2 * self.round_epochs if self.manifold_used == "umap" else -(-self.round_epochs // 2)

    def round_kl_weight(self, iteration):
        """The KL weight of round ``iteration`` (round 0 has the N(0, I) prior)."""
        return self.kl_weight if iteration == 0 or self.prior_weight is None else self.prior_weight

    @property
    def total_epochs(self):
        """VAE epochs of all rounds together (what the apart baseline trains for)."""
        return self.first_round_epochs + (self.mutual_iterations - 1) * self.round_epochs

    @property
    def augments(self):
        return bool(self.augment_rotation or self.augment_shift or self.augment_scale)

    def to_dict(self):
        return _as_dict(self)

    @classmethod
    def from_dict(cls, values):
        _refuse_unknown(cls, values, "config")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"Bad config: {exc}.") from None

    @classmethod
    def from_json(cls, path):
        try:
            with open(path) as handle:
                values = json.load(handle)
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"Cannot read config {path}: {exc}.") from None
        return cls.from_saved(values)

    @classmethod
    def from_saved(cls, values):
        """The config of a saved run (config.json, or a module's in graph.json): a key missing from
        it holds what the version that wrote it trained with (before round0_epochs existed, round 0
        trained vae_epochs epochs like every round)."""
        if isinstance(values, dict) and "round0_epochs" not in values and "vae_epochs" in values:
            values = {**values, "round0_epochs": values["vae_epochs"]}
        return cls.from_dict({**_BEFORE_KEY_EXISTED, **values})

    def differences(self, other):
        """Keys whose values differ from ``other``'s, as "key (mine -> other's)" strings."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{key} ({mine[key]!r} -> {theirs[key]!r})" for key in mine if mine[key] != theirs[key]]

    def replace(self, **changes):
        return self.from_dict({**self.to_dict(), **changes})

    def vae_config(self):
        """The settings of this run's VAE (:class:`VAEConfig`), the manifold's defaults resolved."""
        return VAEConfig.of(self)

    def gmm_config(self):
        """The settings of this run's GMM step and its message (:class:`GMMConfig`)."""
        return GMMConfig.of(self)

    def manifold_config(self):
        """The settings of this run's UMAP step (:class:`ManifoldConfig`)."""
        return ManifoldConfig.of(self)


class _ModuleConfig:
    """A module's own settings: the :class:`TrainConfig` fields it reads, under the same names,
    with every value that follows the manifold there resolved here. So two modules of one graph
    may differ (two VAEs of other architectures), and graph.json records what each module ran
    with. Checked as TrainConfig checks its fields (one sentence naming a bad value)."""

    # resolved values of TrainConfig for fields that follow the manifold there
    _RESOLVED = {"vae_epochs": "round_epochs", "round0_epochs": "first_round_epochs", "vae_init": "vae_init_used",
                 "gmm_prior": "gmm_prior_used"}
    # the other TrainConfig fields set while checking (those that change what is valid)
    _CHECKED_WITH = {}

    def __post_init__(self):
        for name in ("hidden_dims", "conv_channels"):
            if hasattr(self, name):
                object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        TrainConfig(**{**self._CHECKED_WITH, **self.to_dict()})  # raises ConfigError naming a bad value

    @classmethod
    def of(cls, config):
        """``config`` itself if it is one of this class, else the projection of a TrainConfig."""
        if isinstance(config, cls):
            return config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"{cls.__name__}.of takes a {cls.__name__} or a TrainConfig, got {type(config).__name__}.")
        return cls(**{f.name: getattr(config, cls._RESOLVED.get(f.name, f.name)) for f in dataclasses.fields(cls)})

    def to_dict(self):
        return _as_dict(self)

    @classmethod
    def from_dict(cls, values):
        _refuse_unknown(cls, values, cls.__name__)
        return cls(**values)

    @classmethod
    def from_saved(cls, values):
        """A module's config as graph.json holds it; earlier versions wrote the whole TrainConfig there."""
        if "data" in values and "mutual_iterations" in values:
            return cls.of(TrainConfig.from_saved(values))
        return cls.from_dict(values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class VAEConfig(_ModuleConfig):
    """A VAE module's settings (:class:`~vaegmm.modules.VAEStep`); each field as in TrainConfig.
    The defaults are those of a default run (with the manifold)."""

    latent_dim: int = 12
    architecture: str = "mlp"
    hidden_dims: Tuple[int, ...] = (256,)
    conv_channels: Tuple[int, int] = (16, 32)
    vae_epochs: int = 100  # each round after round 0
    round0_epochs: int = 200
    vae_init: str = "warm"
    kl_weight: float = 1.0
    prior_weight: Optional[float] = None
    lr: float = 1e-3
    batch_size: int = 256
    send: str = "mean"
    augment_rotation: float = 15.0
    augment_shift: float = 0.12
    augment_scale: float = 0.1
    augment_target: str = "clean"
    encode_views: int = 0
    contrast_weight: float = 0.0
    contrast_temperature: float = 0.5

    # TrainConfig's names for the values it resolves, so that a module reads either config
    first_round_epochs = property(lambda self: self.round0_epochs)
    round_epochs = property(lambda self: self.vae_epochs)
    vae_init_used = property(lambda self: self.vae_init)
    round_kl_weight = TrainConfig.round_kl_weight
    augments = TrainConfig.augments


@dataclass(frozen=True)
class GMMConfig(_ModuleConfig):
    """A GMM module's settings (:class:`~vaegmm.modules.GMMStep`, :class:`~vaegmm.modules.JointGMM`,
    :class:`~vaegmm.naming_game.NamingGame`): its Gibbs step and the message it sends; each
    field as in TrainConfig. The defaults are those of a default run (on the UMAP embedding)."""

    _CHECKED_WITH = {"manifold": "none", "latent_dim": 1}  # wishart_dof is checked against the data at fit

    n_clusters: Union[int, str] = 10
    max_clusters: int = 30
    gmm_sweeps: int = 100
    gmm_chains: int = 4
    gmm_keep: str = "joint"
    gmm_init: str = "em"
    gmm_report: str = "map"
    chain_init: str = "fresh"
    gmm_prior: str = "data-axis"
    alpha: Optional[float] = None
    beta: float = 1.0
    wishart_scale: float = 0.55
    wishart_dof: Optional[float] = None
    joint_covariance: str = "block"
    prior_from: str = "responsibilities"
    prior_sweeps: int = 10
    prior_covariance: str = "diag"

    gmm_prior_used = property(lambda self: self.gmm_prior)  # TrainConfig's name for the resolved value
    finds_k = TrainConfig.finds_k
    cluster_slots = TrainConfig.cluster_slots


@dataclass(frozen=True)
class ManifoldConfig(_ModuleConfig):
    """A manifold module's settings (:class:`~vaegmm.manifold.Embed`,
    :class:`~vaegmm.manifold.JointEmbed`): UMAP's, as in TrainConfig (N2D's by default)."""

    manifold_dim: int = 10
    manifold_neighbors: int = 20
    manifold_min_dist: float = 0.0


# graph.json's module types and the config each records (to read graph.json of earlier versions)
MODULE_CONFIGS = {"VAEStep": VAEConfig, "GMMStep": GMMConfig, "JointGMM": GMMConfig, "NamingGame": GMMConfig,
                  "Embed": ManifoldConfig, "JointEmbed": ManifoldConfig}


def module_config(entry):
    """The config dict of a graph.json module ``entry`` as this version records it (an entry of an
    earlier version, which recorded the whole TrainConfig, projected onto the module's fields)."""
    kind, values = MODULE_CONFIGS.get(entry.get("type")), entry.get("config")
    if kind is None or not isinstance(values, dict):
        return values
    try:
        return kind.from_saved(values).to_dict()
    except (ConfigError, TypeError):
        return values

