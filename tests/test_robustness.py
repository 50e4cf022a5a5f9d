"""Degenerate data and damaged files: no NaN, no failed Cholesky, no traceback-worthy errors."""

import gzip
import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaegmm.data import DataError, load_dataset, read_idx
from vaegmm.gmm import GibbsGMM

_FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _assert_valid(gmm, n_features):
    assert np.all(np.isfinite(gmm.means_)) and np.all(np.isfinite(gmm.precisions_))
    assert np.all(np.isfinite(gmm.weights_)) and gmm.weights_.sum() == pytest.approx(1.0)
    assert np.all(np.linalg.eigvalsh(gmm.precisions_) > 0)
    assert gmm.means_.shape[1] == n_features and np.all(np.isfinite(gmm.log_likelihood_))


@_FAST
@given(
    n_distinct=st.integers(1, 6),
    n_repeats=st.integers(1, 20),
    n_features=st.integers(1, 6),
    n_components=st.integers(1, 12),
    log_scale=st.sampled_from([-4.0, 0.0, 4.0]),
    rank=st.integers(0, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_sampler_stays_finite_on_degenerate_data(n_distinct, n_repeats, n_features, n_components, log_scale, rank,
                                                 dtype, seed):
    """Duplicates, collinear (low-rank) latents, scales 1e-4 and 1e4, K above the number of
    distinct points, float32 input: every parameter stays finite and positive definite, under
    the fixed prior and the data-scaled one (which refuses, in one sentence, data that are all
    one point: no spread to scale it by)."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(max(rank, 1), n_features)) if rank else np.zeros((1, n_features))
    distinct = rng.normal(size=(n_distinct, basis.shape[0])) @ basis  # rank <= `rank` (0: all points equal)
    X = (np.repeat(distinct, n_repeats, axis=0) * 10.0**log_scale).astype(dtype)
    if len(X) < n_components:
        X = np.vstack([X] * (n_components // len(X) + 1))
    for prior in ("data", "fixed"):
        gmm = GibbsGMM(n_components, n_sweeps=5, random_state=seed, prior=prior, n_chains=1)
        if prior == "data" and np.all(X == X[0]):
            with pytest.raises(ValueError, match="zero variance|got 1 sample"):
                gmm.fit(X)
            continue
        gmm.fit(X)
        _assert_valid(gmm, n_features)
        proba = gmm.predict_proba(X)
        assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=1), 1.0)


def _idx_bytes(array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1" if type_code == 0x08 else ">i4").tobytes()


@_FAST
@given(payload=st.binary(max_size=400), gz=st.booleans())
def test_idx_reader_fuzz_raises_only_data_errors(tmp_path_factory, payload, gz):
    path = tmp_path_factory.mktemp("fuzz") / ("x-idx3-ubyte.gz" if gz else "x-idx3-ubyte")
    path.write_bytes(gzip.compress(payload) if gz else payload)
    try:
        dataset = load_dataset(path)
    except DataError:
        return
    assert dataset.images.ndim == 3 and np.all((dataset.images >= 0) & (dataset.images <= 1))


@_FAST
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    cut=st.integers(0, 40),
    flip=st.integers(0, 3),
)
def test_idx_reader_on_mutated_valid_files(tmp_path_factory, shape, cut, flip):
    """Valid headers with truncated bodies or a damaged magic number are refused cleanly."""
    data = bytearray(_idx_bytes(np.zeros(shape, dtype=np.uint8) + 7))
    if cut:
        data = data[: max(len(data) - cut, 0)]
    if flip and data:
        data[min(flip - 1, len(data) - 1)] ^= 0xFF
    path = tmp_path_factory.mktemp("mut") / "m-idx3-ubyte"
    path.write_bytes(bytes(data))
    try:
        read_idx(path)
    except DataError:
        pass


@_FAST
@given(payload=st.binary(max_size=300))
def test_npz_reader_fuzz_raises_only_data_errors(tmp_path_factory, payload):
    folder = tmp_path_factory.mktemp("npz")
    for name in ("x.npz", "x.npy"):
        (folder / name).write_bytes(payload)
        try:
            load_dataset(folder / name)
        except DataError:
            pass


@_FAST
@given(
    images=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=24),
    with_labels=st.booleans(),
    n_labels=st.integers(0, 6),
)
def test_npz_contents_fuzz(tmp_path_factory, images, with_labels, n_labels):
    """Any float contents (NaN, inf, negative, empty): a clean dataset in [0, 1] or a DataError."""
    buffer = io.BytesIO()
    arrays = {"x": np.array(images, dtype=np.float32).reshape(len(images), 1, -1) if images else np.zeros((0, 2, 2))}
    if with_labels:
        arrays["y"] = np.arange(n_labels)
    np.savez(buffer, **arrays)
    path = tmp_path_factory.mktemp("npzc") / "d.npz"
    path.write_bytes(buffer.getvalue())
    try:
        dataset = load_dataset(path)
    except DataError:
        return
    assert np.all(np.isfinite(dataset.images)) and dataset.images.min() >= 0 and dataset.images.max() <= 1


def test_cholesky_jitter_is_bounded_and_reported():
    from vaegmm.gibbs import cholesky

    singular = np.array([[[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])  # rank 1 and zero
    log = []
    chol = cholesky(singular, log)
    assert np.all(np.isfinite(chol)) and len(log) == 1 and 0 < log[0] <= 1e-3
    np.testing.assert_allclose(chol @ chol.transpose(0, 2, 1), singular, atol=1e-6)
    log = []
    cholesky(np.eye(2)[None] * 3.0, log)
    assert log == []
    with pytest.raises(ValueError, match="not positive definite even with jitter"):
        cholesky(np.array([[[1.0, 0.0], [0.0, -1.0]]]))


def test_fit_reports_jitter_when_it_was_needed(monkeypatch):
    import vaegmm.gmm as gmm_module

    X = np.random.default_rng(0).normal(size=(50, 2))
    clean = GibbsGMM(2, n_sweeps=3, random_state=0, n_chains=1).fit(X)
    assert clean.n_jitter_ == 0 and clean.max_jitter_ == 0.0
    original = gmm_module.cholesky

    def needs_jitter(matrices, jitter_log=None):
        if jitter_log is not None:
            jitter_log.append(1e-8)
        return original(matrices, jitter_log)

    monkeypatch.setattr(gmm_module, "cholesky", needs_jitter)
    with pytest.warns(RuntimeWarning, match="needed jitter"):
        jittered = GibbsGMM(2, n_sweeps=3, random_state=0, n_chains=1).fit(X)
    assert jittered.n_jitter_ > 0 and jittered.max_jitter_ == 1e-8
