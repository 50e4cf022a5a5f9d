"""vaegmm: mutual learning between a variational autoencoder and a Bayesian Gaussian mixture."""

from .config import TrainConfig
from .data import ImageDataset, load_dataset
from .gmm import GibbsGMM
from .metrics import cluster_accuracy, clustering_metrics
from .mutual import fit_mutual
from .vae import VAE

__version__ = "0.1.0"
