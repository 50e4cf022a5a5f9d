"""Figures and the run report: every figure renders from a tiny run, is a real image, and is in
the report; plotting works for any K and latent dimension."""

import base64
import json
import re
import shutil

import matplotlib
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vaegmm import api, figures, plots
from vaegmm.cli import main
from vaegmm.data import load_dataset
from vaegmm.report import collect_figures, write_report

TINY = ["--data", "digits", "--max-samples", "300", "--vae-iter", "2", "--gmm-iter", "3", "--batch-size", "64",
        "--quiet", "--threads", "1", "--manifold", "none"]  # (tests/test_manifold.py: the default's figures)


def _train(out, clusters, latent_dim):
    args = ["train", *TINY, "--out", str(out), "--clusters", str(clusters), "--latent-dim", str(latent_dim)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny two-round run on scikit-learn's digits; `vaegmm train` writes figures and report."""
    return _train(tmp_path_factory.mktemp("run"), clusters=5, latent_dim=3)


def _expected_figures(run):
    cluster = figures.largest_cluster(run, 1)
    return ["elbo.png", "sweep_metrics.png", "latent_pca.png", "latent_tsne.png", "reconstructions.png",
            "clusters_iteration0.png", "clusters_iteration1.png", f"gmm_iteration1_cluster{cluster}.png",
            f"decode_iteration1_cluster{cluster}.png"]


def _check_image(path):
    """A readable PNG of sensible size with something drawn on it."""
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), f"{path.name}: shape {image.shape}"
    height, width = image.shape[:2]
    assert 150 <= height <= 4000 and 150 <= width <= 4000, f"{path.name}: {width}x{height} pixels"
    grey = image[..., :3].mean(axis=2)
    assert grey.std() > 0.05, f"{path.name} is blank"
    assert (grey < 0.9).mean() > 0.01, f"{path.name} has almost nothing drawn on it"


def test_train_writes_every_figure_as_a_valid_image(run_dir):
    written = sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert written == sorted(_expected_figures(run_dir))
    for path in (run_dir / "figures").glob("*.png"):
        _check_image(path)
    assert plt.get_fignums() == []  # every figure closed, none shown
    assert matplotlib.get_backend().lower() == "agg"


def test_report_html_embeds_every_figure(run_dir):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    figures = sorted((run_dir / "figures").glob("*.png"))
    assert page.count("data:image/png;base64,") == len(figures)
    for path in figures:
        assert base64.b64encode(path.read_bytes()).decode("ascii") in page, path.name
    assert "<img src=\"figures/" not in page  # self-contained: no linked image
    assert page.count("<figcaption>") == len(figures)


def test_report_md_links_every_figure_that_exists(run_dir):
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    existing = sorted(f"figures/{p.name}" for p in (run_dir / "figures").glob("*.png"))
    assert sorted(linked) == existing
    assert all((run_dir / link).is_file() for link in linked)


def test_report_holds_config_and_metrics_of_every_round(run_dir):
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())["iterations"]
    for name in ("report.md", "report.html"):
        text = (run_dir / name).read_text(encoding="utf-8")
        for row in metrics:
            for key, fmt in (("elbo", "{:.2f}"), ("accuracy", "{:.4f}"), ("ari", "{:.4f}"), ("nmi", "{:.4f}"),
                             ("seconds", "{:.1f}")):
                assert fmt.format(row[key]) in text, (name, key)
        assert "n_clusters" in text and "latent_dim" in text and "digits" in text


def test_every_figure_has_a_caption(run_dir):
    figures, left_out = collect_figures(run_dir)
    assert left_out == []
    assert sorted(f.path.name for f in figures) == sorted(_expected_figures(run_dir))
    for figure in figures:
        assert len(figure.caption) > 80 and figure.title
    tsne = next(f for f in figures if f.path.name == "latent_tsne.png")
    assert "all 300 images" in tsne.caption


def test_report_command_rewrites_report_and_missing_figures(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "figures")
    (copy / "report.html").unlink()
    (copy / "report.md").unlink()
    assert main(["report", "--run", str(copy)]) == 0
    assert "report.html" in capsys.readouterr().out
    assert sorted(p.name for p in (copy / "figures").glob("*.png")) == sorted(_expected_figures(copy))
    assert (copy / "report.html").stat().st_size > 10_000 and (copy / "report.md").is_file()


def test_report_of_a_folder_that_is_no_run_is_one_clear_error(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_tsne_subsample_is_stated(run_dir, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    sizes = []
    embed = plots.tsne_embedding
    monkeypatch.setattr(plots, "tsne_embedding", lambda points, **kw: sizes.append(len(points)) or embed(points, **kw))
    monkeypatch.setattr(figures, "TSNE_MAX_POINTS", 100)
    write_report(copy, refresh_figures=True)
    assert sizes == [100, 100]
    text = (copy / "report.md").read_text(encoding="utf-8")
    assert "random subset of 100 of the 300 images (seed 0)" in text


@pytest.mark.parametrize("clusters, latent_dim", [(3, 2), (7, 5)])
def test_figures_for_other_k_and_latent_dim(tmp_path, clusters, latent_dim):
    run = _train(tmp_path / "run", clusters, latent_dim)
    names = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert names == sorted(_expected_figures(run))
    for path in (run / "figures").glob("*.png"):
        _check_image(path)
    rows = mpimg.imread(run / "figures" / "clusters_iteration1.png").shape[0]
    assert rows > 60 * clusters  # a row per cluster
    assert f"k = 0..{clusters - 1}" in (run / "report.md").read_text(encoding="utf-8")


def test_train_model_without_labels_skips_reconstructions_and_says_so(tmp_path):
    images = torch.as_tensor(load_dataset("digits", max_samples=200).images)[:, None]
    dataset = TensorDataset(images)  # no labels
    out = tmp_path / "api"
    api.train_model(2, out, DataLoader(dataset, batch_size=64, shuffle=True),
                    DataLoader(dataset, batch_size=100, shuffle=False), progress=False,
                    vae_epochs=1, gmm_sweeps=2, n_clusters=4, latent_dim=2, hidden_dims=(32,))
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "reconstructions.png" not in names and "sweep_metrics.png" not in names
    assert {"elbo.png", "latent_pca.png", "latent_tsne.png", "clusters_iteration1.png"} <= set(names)
    for path in (out / "figures").glob("*.png"):
        _check_image(path)
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "No reconstruction figure" in text and "DataLoaders" in text
    assert "GMM cluster" in text and "n/a" in text
    assert (out / "report.html").read_text(encoding="utf-8").count("data:image/png;base64,") == len(names)


@pytest.mark.parametrize("clusters, latent_dim", [(3, 2), (7, 5), (4, 1)])
def test_array_plots_for_any_k_and_latent_dim(tmp_path, clusters, latent_dim):
    rng = np.random.default_rng(0)
    means = rng.normal(scale=3.0, size=(clusters, latent_dim))
    factors = rng.normal(size=(clusters, latent_dim, latent_dim))
    covariances = factors @ factors.transpose(0, 2, 1) + np.eye(latent_dim)
    assignments = rng.integers(clusters, size=400)
    latents = means[assignments] + rng.normal(size=(400, latent_dim))
    projection, center = plots.pca_projection(latents)
    assert projection.shape == (2, latent_dim)
    for cluster in (0, clusters - 1):
        samples = rng.multivariate_normal(means[cluster], covariances[cluster], size=50)
        _check_image(plots.plot_gmm_cluster(means, covariances, cluster, samples, tmp_path / f"gmm{cluster}.png",
                                            projection, ("a", "b"), points=latents))
    embedding = plots.tsne_embedding(latents, seed=0)
    assert embedding.shape == (400, 2) and np.isfinite(embedding).all()
    panels = [("PCA", (latents - center) @ projection.T, assignments, "GMM cluster"),
              ("t-SNE", embedding, assignments, "GMM cluster")]
    _check_image(plots.plot_latent_space(panels, tmp_path / "latent.png"))
    images = rng.random((clusters * 3, 8, 8))
    _check_image(plots.save_image_grid(tmp_path / "grid.png", images, n_cols=3,
                                       row_labels=[f"k={k}" for k in range(clusters)]))
    inputs = rng.random((5, 8, 8))
    _check_image(plots.plot_reconstructions(inputs, [("round 0", inputs ** 2), ("round 1", inputs ** 3)],
                                            tmp_path / "recon.png"))
    assert plt.get_fignums() == []


def test_tsne_is_seeded_and_handles_few_points():
    points = np.random.default_rng(1).normal(size=(12, 3))
    first, second = plots.tsne_embedding(points, seed=3), plots.tsne_embedding(points, seed=3)
    np.testing.assert_allclose(first, second)
    assert first.shape == (12, 2)


def test_elbo_plot_with_one_round_and_many_rounds(tmp_path):
    _check_image(plots.plot_elbo([np.linspace(-200, -100, 3)], tmp_path / "one.png"))
    curves = [np.linspace(-250, -100 + r, 40) for r in range(5)]
    _check_image(plots.plot_elbo(curves, tmp_path / "five.png"))


def test_report_config_shows_the_values_used_for_derived_fields(run_dir):
    # The fixture trains 2 VAE epochs with L = 3, K = 5 and the default KL weight; round0_epochs,
    # alpha, wishart_dof and prior_weight are left None ("derived").
    config = json.loads((run_dir / "config.json").read_text())
    assert [config[k] for k in ("round0_epochs", "alpha", "wishart_dof", "prior_weight")] == [None] * 4
    expected = {"round0_epochs": "1 (default: half of vae_epochs, rounded up)",
                "alpha": "0.3 (default for a fixed K)",
                "wishart_dof": "3 (default: = latent_dim)",
                "prior_weight": "1 (default: = kl_weight)",
                "vae_init": "retrain (default with manifold = none)"}
    text = (run_dir / "report.md").read_text(encoding="utf-8")
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    for field, value in expected.items():
        assert f"| {field} | {value} |" in text, field
        assert f'<td class="key">{field}</td><td>{value}</td>' in page, field
        assert f"| {field} | None |" not in text


def test_report_derived_values_follow_the_config():
    from vaegmm.config import TrainConfig
    from vaegmm.report import resolved_defaults

    auto = TrainConfig(n_clusters="auto", max_clusters=20, vae_epochs=7, kl_weight=0.5, latent_dim=6, manifold="none")
    assert resolved_defaults(auto) == {
        "round0_epochs": (4, "default: half of vae_epochs, rounded up"),
        "prior_weight": (0.5, "default: = kl_weight"),
        "alpha": (0.01 / 20, "default: 0.01 / max_clusters, as K is found"),
        "gmm_prior": ("data", "default with manifold = none"),
        "vae_init": ("retrain", "default with manifold = none"),
        "wishart_dof": (6, "default: = latent_dim"),
    }
    assert resolved_defaults(TrainConfig(manifold="umap"))["vae_init"] == ("warm", "default with manifold = umap")
    assert resolved_defaults(TrainConfig(vae_epochs=7))["round0_epochs"] == (14, "default: twice vae_epochs, with a manifold")
    assert resolved_defaults(TrainConfig(round0_epochs=3, alpha=2.0, wishart_dof=20.0, prior_weight=0.1,
                                         gmm_prior="data", vae_init="retrain", vae_epochs=200)) == {}


def test_figure_titles_and_captions_say_round(run_dir, monkeypatch):
    from matplotlib.text import Text

    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)  # draw, write nothing
    figures.write_figures(run_dir)
    assert len(drawn) == len(_expected_figures(run_dir))
    texts = [t.get_text() for fig in drawn for t in fig.findobj(Text) if t.get_text()]
    assert not [t for t in texts if re.search(r"\biterations?\b", t, re.IGNORECASE)]
    titles = [ax.get_title() for fig in drawn for ax in fig.axes]
    assert "round 0 (without mutual learning)" in titles and "round 1 (with mutual learning)" in titles
    assert any(title.startswith("GMM cluster") and title.endswith(", round 1") for title in titles)
    assert "round 0" in texts and "round 1" in texts  # the reconstruction figure's row labels
    captured, _ = collect_figures(run_dir)
    for figure in captured:
        assert not re.search(r"\biterations?\b", figure.title + " " + figure.caption, re.IGNORECASE), figure.path.name
    assert any("round 1" in figure.title for figure in captured)
