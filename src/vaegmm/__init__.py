"""vaegmm: mutual learning between variational autoencoders and Bayesian Gaussian mixtures.

A system is a graph of modules (:mod:`vaegmm.engine`): ``Graph``, ``Module`` and ``run``. The
modules shipped: ``VAEStep`` (a VAE), ``GMMStep`` (a GMM on one module's latents, or on their
embedding), ``JointGMM`` (a GMM over one or more modalities' latents), ``NamingGame`` (two
agents' GMMs and the Metropolis-Hastings game), ``Embed`` (UMAP of one module's latents) and
``JointEmbed`` (UMAP of several modalities' latents together). The
systems wired from them: ``fit_mutual`` (one VAE and one GMM), ``fit_multimodal`` (one VAE per
modality, one GMM) and ``fit_naming_game`` (two agents). Each module has its own settings
(``VAEConfig``, ``GMMConfig``, ``ManifoldConfig``; a ``TrainConfig`` holds a whole run's and
projects onto them), which graph.json records.
"""

from .config import ConfigError, GMMConfig, ManifoldConfig, TrainConfig, VAEConfig
from .data import DataError, ImageDataset, load_dataset
from .engine import Addressed, Graph, GraphResult, LabelScore, Module, StepContext, run
from .gmm import GibbsGMM
from .messages import PriorMessage
from .manifold import Embed, JointEmbed
from .metrics import cluster_accuracy, clustering_metrics
from .modules import GMMStep
from .multimodal import JointGMM, MultimodalResult, VAEStep, fit_multimodal, load_views
from .mutual import MutualResult, RoundResult, fit_mutual
from .naming_game import NamingGame, NamingGameResult, fit_naming_game
from .rundir import RunComplete, RunDirectory, RunError
from .vae import VAE

__all__ = [
    # the engine
    "Graph", "Module", "run", "Addressed", "StepContext", "LabelScore", "GraphResult",
    # modules
    "VAEStep", "GMMStep", "JointGMM", "NamingGame", "Embed", "JointEmbed", "GibbsGMM", "VAE", "PriorMessage",
    # systems and their results
    "fit_mutual", "fit_multimodal", "fit_naming_game", "MutualResult", "RoundResult", "MultimodalResult",
    "NamingGameResult",
    # data, settings, run directories, scores
    "TrainConfig", "VAEConfig", "GMMConfig", "ManifoldConfig", "ImageDataset", "load_dataset", "load_views",
    "RunDirectory", "cluster_accuracy", "clustering_metrics",
    # errors
    "ConfigError", "DataError", "RunError", "RunComplete",
]

__version__ = "0.1.0"
