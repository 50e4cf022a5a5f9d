"""Clustering metrics against true labels (used for evaluation only, never for training)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = ["cluster_accuracy", "many_to_one_accuracy", "match_clusters", "clustering_metrics"]


def _contingency(y_true, y_pred):
    """Counts of (cluster, class) pairs, shape (n_clusters, n_classes), with the label values."""
    classes, true_idx = np.unique(y_true, return_inverse=True)
    clusters, pred_idx = np.unique(y_pred, return_inverse=True)
    table = np.zeros((clusters.size, classes.size), dtype=np.int64)
    np.add.at(table, (pred_idx, true_idx), 1)
    return table, clusters, classes


def match_clusters(y_true, y_pred):
    """The one-to-one cluster -> class map that maximises agreement (Hungarian algorithm).

    Returns a dict {cluster: class}; clusters left unmatched (more clusters than classes) are
    absent and count as errors in :func:`cluster_accuracy`.
    """
    table, clusters, classes = _contingency(np.asarray(y_true), np.asarray(y_pred))
    rows, cols = linear_sum_assignment(table, maximize=True)
    return {clusters[r].item(): classes[c].item() for r, c in zip(rows, cols)}


def cluster_accuracy(y_true, y_pred):
    """Accuracy under the best one-to-one matching of clusters to classes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_pred : array-like of shape (n_samples,)

    Returns
    -------
    accuracy : float in [0, 1]
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {y_true.shape} and {y_pred.shape}.")
    if y_true.size == 0:
        raise ValueError("Cannot score an empty labelling.")
    table, _, _ = _contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / y_true.size)


def many_to_one_accuracy(y_true, y_pred):
    """Accuracy when every cluster is read as its most frequent class (several clusters may share
    a class). Unlike :func:`cluster_accuracy` it does not penalise a K above the number of
    classes, and it rises to 1 as K grows: report it beside ARI and NMI, never alone."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be 1-D of one non-zero length, got {y_true.shape} and {y_pred.shape}.")
    table, _, _ = _contingency(y_true, y_pred)
    return float(table.max(axis=1).sum() / y_true.size)


def clustering_metrics(y_true, y_pred):
    """{"accuracy", "ari", "nmi"} of a clustering against true labels."""
    return {
        "accuracy": cluster_accuracy(y_true, y_pred),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
    }
