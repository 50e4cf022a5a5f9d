"""Rough edges a new user met: unreadable data files, overlapping labels, a flat per-sweep plot.
(The run-report checks, which need a trained run, are in test_figures.py.)"""

import itertools

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from vaegmm import plots
from vaegmm.cli import main
from vaegmm.data import DataError, load_dataset, open_mapped, read_idx


# ---------------------------------------------------------------------------------------------
# 1. A file that is not a NumPy .npz/.npy: one clear sentence, never "allow_pickle", never ".."
# ---------------------------------------------------------------------------------------------
def _one_clean_sentence(message):
    assert message.endswith(".") and not message.endswith("..")
    assert ".." not in message and "\n" not in message
    assert "pickle" not in message.lower()  # numpy's advice to load with allow_pickle runs the file's code


def test_cli_text_file_named_npz_is_one_clear_sentence(tmp_path, capsys):
    path = tmp_path / "x.npz"
    path.write_text("label,pixel0,pixel1\n3,0,255\n")
    capsys.readouterr()
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "run"), "--quiet", "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vaegmm: error: ") and "Traceback" not in err
    message = err[len("vaegmm: error: "):].rstrip("\n")
    assert message == (f"{path} is not a NumPy .npz archive (it does not start with the zip signature); "
                       "save images with numpy.savez(path, x=images, y=labels).")
    _one_clean_sentence(message)
    assert not (tmp_path / "run").exists()


def _write_object_npz(path):
    np.savez(path, x=np.array([object()] * 3, dtype=object))


def _write_object_npy(path):
    np.save(path, np.array([object()] * 3, dtype=object), allow_pickle=True)


BAD_ARRAY_FILES = {
    "text.npz": (lambda p: p.write_text("hello\n"), "is not a NumPy .npz archive (it does not start with the zip"),
    "text.npy": (lambda p: p.write_text("hello\n"), "is not a NumPy .npy file (it does not start with the .npy magic"),
    "empty.npz": (lambda p: p.write_bytes(b""), "is not a NumPy .npz archive (an empty file)"),
    "broken.npz": (lambda p: p.write_bytes(b"PK\x03\x04 and then garbage"), "is not a readable NumPy .npz archive ("),
    "objects.npz": (_write_object_npz, "(it holds Python objects rather than numeric arrays)"),
    "objects.npy": (_write_object_npy, "(it holds Python objects rather than numeric arrays)"),
}


def _error_reading(tmp_path, name, reader):
    """(path, the DataError message of ``reader(path)``) for the bad file ``name``."""
    path = tmp_path / name
    BAD_ARRAY_FILES[name][0](path)
    with pytest.raises(DataError) as info:
        reader(path)
    return path, str(info.value)


@pytest.mark.parametrize("name", sorted(BAD_ARRAY_FILES))
def test_unreadable_array_file_is_one_clean_sentence(tmp_path, name):
    phrase = BAD_ARRAY_FILES[name][1]
    path, message = _error_reading(tmp_path, name, load_dataset)
    assert message.startswith(str(path)) and phrase in message
    hint = "numpy.savez(path, x=images, y=labels)" if name.endswith(".npz") else "numpy.save(path, images)"
    assert message.endswith(f"save images with {hint}.")
    _one_clean_sentence(message)


@pytest.mark.parametrize("name", ["text.npy", "objects.npy"])
def test_memory_mapped_npy_errors_are_clean_too(tmp_path, name):
    _, message = _error_reading(tmp_path, name, open_mapped)
    assert "is not a" in message and "numpy.save(path, images)" in message
    _one_clean_sentence(message)


def test_idx_read_errors_end_in_one_period(tmp_path):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(DataError, match="Cannot read IDX file") as info:
        read_idx(path)
    _one_clean_sentence(str(info.value))
    with pytest.raises(DataError) as info:
        read_idx(tmp_path / "missing-idx3-ubyte")
    _one_clean_sentence(str(info.value))


def test_valid_array_files_still_load(tmp_path):
    images = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "ok.npz", x=images, y=np.arange(6))
    np.save(tmp_path / "ok.npy", images)
    np.savez(tmp_path / "nothing.npz")  # an empty zip archive: readable, but holds no x
    assert len(load_dataset(tmp_path / "ok.npz")) == 6 and len(load_dataset(tmp_path / "ok.npy")) == 6
    assert len(open_mapped(tmp_path / "ok.npy")) == 6
    with pytest.raises(DataError, match="no 'x'"):
        load_dataset(tmp_path / "nothing.npz")


# ---------------------------------------------------------------------------------------------
# 3. Labels of the latent and GMM plots never overlap
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def captured(monkeypatch):
    """The figures the plotting functions would save, kept instead of written."""
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def _label_extents(fig):
    """(text, window extent) of every label of every axes, drawn by Agg: the extent of the label's
    box where it has one, else of its glyphs (never of its line back to the anchor)."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()

    def extent(text):
        box = text.get_bbox_patch()
        return box.get_window_extent(renderer) if box is not None else Text.get_window_extent(text, renderer)

    return [[(text.get_text(), extent(text)) for text in ax.texts] for ax in fig.axes]


def _assert_apart(labels):
    for (first, a), (second, b) in itertools.combinations(labels, 2):
        assert not a.overlaps(b), f"labels {first!r} and {second!r} overlap: {a} and {b}"


def test_latent_space_class_labels_do_not_overlap(captured):
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(600, 2))  # every class spread alike: the ten medians nearly coincide
    labels = rng.integers(0, 10, size=600)
    plots.plot_latent_space([("round 0", embedding, labels, "true label"),
                             ("round 1", embedding * [5.0, 0.2], labels, "true label")], "unused.png")
    (fig,) = captured
    panels = [texts for texts in _label_extents(fig) if texts]
    assert len(panels) == 2
    for texts in panels:
        assert sorted(name for name, _ in texts) == [str(v) for v in range(10)]
        _assert_apart(texts)


@pytest.mark.parametrize("latent_dim", [4, 1])
def test_gmm_plot_mean_numbers_do_not_overlap(captured, latent_dim):
    rng = np.random.default_rng(1)
    n_clusters = 12
    means = rng.normal(scale=0.02, size=(n_clusters, latent_dim))  # means nearly on top of each other
    means[5] += 3.0
    covariances = np.stack([np.eye(latent_dim)] * n_clusters)
    latents = rng.normal(size=(300, latent_dim))
    projection, _ = plots.pca_projection(latents)
    samples = rng.normal(size=(40, latent_dim))
    plots.plot_gmm_cluster(means, covariances, 3, samples, "unused.png", projection, ("a", "b"), points=latents)
    (fig,) = captured
    texts = [item for panel in _label_extents(fig) for item in panel]
    assert sorted(name for name, _ in texts) == sorted(str(k) for k in range(n_clusters))
    _assert_apart(texts)
    bold = [t for ax in fig.axes for t in ax.texts if t.get_fontweight() in ("bold", 700)]
    assert [t.get_text() for t in bold] == ["3"]  # the plotted cluster's number stands out


def test_place_labels_keeps_a_free_label_at_its_anchor():
    from vaegmm.plots import _place_labels, _subplots

    fig, ax = _subplots(figsize=(4, 4))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    far, near_a, near_b = _place_labels(ax, [(1, 1), (5, 5), (5.01, 5.0)], ["far", "a", "b"])
    assert far.xyann == (0.0, 0.0) and far.arrow_patch is None  # nothing in the way: centred, no line
    assert near_a.xyann == (0.0, 0.0)
    assert near_b.xyann != (0.0, 0.0) and near_b.arrow_patch is not None  # moved aside, a line back


# ---------------------------------------------------------------------------------------------
# 4. The per-sweep metrics plot: y axis fitted to the data, the reported state marked
# ---------------------------------------------------------------------------------------------
def test_sweep_metrics_y_axis_fits_the_data_and_marks_the_final_sweep(captured):
    sweeps = [{"accuracy": list(np.linspace(0.70, 0.74, 15)), "ari": list(np.linspace(0.50, 0.53, 15))},
              {"accuracy": list(np.linspace(0.72, 0.76, 15)), "ari": list(np.linspace(0.55, 0.58, 15))}]
    plots.plot_sweep_metrics(sweeps, "unused.png")
    (fig,) = captured
    accuracy, ari = fig.axes
    low, high = accuracy.get_ylim()
    assert 0.6 < low <= 0.70 - 0.01 and 0.76 + 0.01 <= high < 0.85  # not (0, 1): differences show
    low, high = ari.get_ylim()
    assert 0.4 < low <= 0.49 and 0.59 <= high < 0.7
    for ax in (accuracy, ari):
        handles, labels = ax.get_legend_handles_labels()
        assert "reported: final sweep" in labels
        marker = handles[labels.index("reported: final sweep")]
        assert list(marker.get_xdata()) == [15, 15]  # a vertical line at the last sweep


def test_sweep_metrics_mark_each_rounds_most_probable_state(captured):
    sweeps = [{"accuracy": list(np.linspace(0.70, 0.74, 15)), "reported_sweep": 6},
              {"accuracy": list(np.linspace(0.72, 0.76, 15)), "reported_sweep": 11}]
    plots.plot_sweep_metrics(sweeps, "unused.png", reported=[{"accuracy": 0.81}, {}])
    (fig,) = captured
    handles, labels = fig.axes[0].get_legend_handles_labels()
    assert "reported: final sweep" not in labels
    first = handles[labels.index("round 0 reported: most probable state (sweep 7)")]
    assert list(first.get_xdata()) == [7] and list(first.get_ydata()) == [0.81]  # the reported score
    second = handles[labels.index("round 1 reported: most probable state (sweep 12)")]
    assert list(second.get_ydata()) == [pytest.approx(sweeps[1]["accuracy"][11])]  # else the trace's value
    assert fig.axes[0].get_ylim()[1] > 0.81


def test_sweep_metrics_limits_keep_a_margin_for_flat_data():
    low, high = plots._metric_limits([0.5] * 10)
    assert low == pytest.approx(0.48) and high == pytest.approx(0.52)
    assert plots._metric_limits([np.nan]) == (0.0, 1.0)
