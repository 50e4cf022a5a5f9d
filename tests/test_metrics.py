"""Clustering metrics: Hungarian accuracy is the optimum over one-to-one matchings."""

import itertools

import numpy as np
import pytest

from vaegmm.metrics import cluster_accuracy, clustering_metrics, match_clusters


def test_permuted_labelling_scores_one():
    rng = np.random.default_rng(0)
    y = rng.integers(10, size=500)
    permutation = rng.permutation(10)
    scores = clustering_metrics(y, permutation[y])
    assert scores == pytest.approx({"accuracy": 1.0, "ari": 1.0, "nmi": 1.0})
    assert match_clusters(y, permutation[y]) == {int(permutation[c]): c for c in range(10)}


def _brute_force_accuracy(y_true, y_pred):
    classes, clusters = np.unique(y_true), np.unique(y_pred)
    best = 0
    for chosen in itertools.permutations(classes, len(clusters)) if len(clusters) <= len(classes) else []:
        mapping = dict(zip(clusters, chosen))
        best = max(best, sum(mapping[p] == t for t, p in zip(y_true, y_pred)))
    return best / len(y_true)


@pytest.mark.parametrize("seed", range(5))
def test_hungarian_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(5, size=60)
    y_pred = np.where(rng.random(60) < 0.5, y_true, rng.integers(4, size=60))  # noisy, 5 clusters at most
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(_brute_force_accuracy(y_true, y_pred))


def test_hungarian_beats_greedy_matching():
    # Greedy (largest cell first) maps cluster 0 -> class 0 (count 5) and must then send
    # cluster 1 -> class 1 (count 0): 5 correct. Optimal: 0 -> 1 and 1 -> 0: 4 + 4 = 8.
    y_pred = np.array([0] * 9 + [1] * 4)
    y_true = np.array([0] * 5 + [1] * 4 + [0] * 4)
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(8 / 13)


def test_more_clusters_than_classes_counts_unmatched_as_errors():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 2, 2])
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(3 / 4)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="one length"):
        cluster_accuracy([0, 1], [0])
