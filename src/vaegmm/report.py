"""The run report: ``report.html`` and ``report.md`` in a run directory.

Both hold the config, the metrics of every round and every figure of ``RUN/figures`` with a
caption saying what it shows. ``report.html`` is self-contained (figures embedded as base64
PNG); ``report.md`` links the figures by relative path (``figures/<name>.png``). Captions are
built from the figure's file name and the run's own config, metrics and GMM, so they hold for
any K and latent dimension.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from .figures import ELBO, RECONSTRUCTIONS, REGISTRY, RunFacts, write_figures
from .rundir import RunDirectory, RunError, atomic_write_bytes

__all__ = ["Figure", "collect_figures", "write_report", "resolved_defaults", "REPORT_HTML", "REPORT_MD"]

REPORT_HTML = "report.html"
REPORT_MD = "report.md"

@dataclass
class Figure:
    """One figure of the report: its PNG, a short title and a caption saying what it shows."""

    path: Path
    title: str
    caption: str


def collect_figures(run_dir):
    """The PNGs of ``run_dir/figures`` in report order, captioned.

    Returns
    -------
    figures : list of Figure
    left_out : list of str, one sentence per PNG left out (a round or cluster the run lacks)
    """
    run = RunDirectory(run_dir)
    if not run.iterations():
        raise RunError(f"{run_dir} holds no completed round to report on.")
    return _collect(RunFacts(run))


def _collect(facts):
    folder = facts.run.path / "figures"
    ranked, left_out = [], []
    for path in sorted(folder.glob("*.png")) if folder.is_dir() else []:
        for rank, kind in enumerate(REGISTRY):
            fields = kind.match(path.name)
            if fields is not None:
                break
        else:
            ranked.append(((len(REGISTRY), path.name), Figure(
                path, path.stem.replace("_", " "), "A figure saved in this run's figures folder by hand; "
                "`vaegmm train` does not write one of this name.")))
            continue
        title_caption = kind.caption(facts, **fields)
        if title_caption is None:
            left_out.append(f"figures/{path.name} refers to a round or cluster this run does not have; left out.")
            continue
        ranked.append(((rank, *fields.values()), Figure(path, *title_caption)))
    return [figure for _, figure in sorted(ranked, key=lambda pair: pair[0])], left_out


def write_report(run_dir, *, refresh_figures=False, device="cpu"):
    """Write ``report.html`` and ``report.md`` into a run directory.

    Parameters
    ----------
    run_dir : path
        Run directory written by ``vaegmm train`` or ``train_model``.
    refresh_figures : bool, default=False
        Rewrite every figure first (:func:`vaegmm.figures.write_figures`). Figures are also written
        when ``figures/elbo.png`` is missing (a run trained with ``--no-figures``).

    Returns
    -------
    (path of report.html, path of report.md)
    """
    run = RunDirectory(run_dir)
    run.load_config()  # a clear error for a folder that is not a run directory
    if not run.iterations():
        raise RunError(f"{run_dir} holds no completed round to report on.")
    if refresh_figures or not (run.figures / ELBO.file()).exists():
        write_figures(run_dir, device=device)
    facts = RunFacts(run)
    figures, notes = _collect(facts)
    names = {figure.path.name for figure in figures}
    if RECONSTRUCTIONS.file() not in names:
        if facts.config.data == "dataloader":
            notes.insert(0, "No reconstruction figure: this run was trained from DataLoaders (train_model), "
                            "and a run directory does not store the images to reconstruct.")
        else:
            notes.insert(0, f"No reconstruction figure: the training images could not be reloaded from "
                            f"{facts.config.data!r} (moved or changed since the run).")
    if not facts.has_labels:
        notes.insert(0, "The data have no labels: accuracy, ARI and NMI are n/a, there is no figure of "
                        "clustering per sweep, and the latent space is coloured by GMM cluster.")
    _, image_shape = run.load_vae(facts.last)
    summary = _summary(facts, image_shape)
    rows = _metric_rows(run.load_metrics())
    html_path, md_path = run.path / REPORT_HTML, run.path / REPORT_MD
    atomic_write_bytes(html_path, _html(run, facts, summary, rows, figures, notes).encode("utf-8"))
    atomic_write_bytes(md_path, _markdown(run, facts, summary, rows, figures, notes).encode("utf-8"))
    return html_path, md_path


# ---------------------------------------------------------------------------------------------
# Content shared by both formats
# ---------------------------------------------------------------------------------------------
_METRIC_COLUMNS = [  # (metrics.json key, heading, format)
    ("iteration", "round", "{:d}"),
    ("elbo", "ELBO (nats/image)", "{:.2f}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("ari", "ARI", "{:.4f}"),
    ("nmi", "NMI", "{:.4f}"),
    ("clusters_found", "K found", "{:d}"),
    ("accuracy_many_to_one", "accuracy, many-to-one", "{:.4f}"),
    ("seconds", "time (s)", "{:.1f}"),
    ("vae_seconds", "VAE (s)", "{:.1f}"),
    ("gmm_seconds", "GMM (s)", "{:.1f}"),
]


_FOUND_K_COLUMNS = ("clusters_found", "accuracy_many_to_one")  # only in runs whose GMM finds K


def _metric_rows(metrics):
    """Headings and one row of strings per round ("n/a" where a value is null)."""
    columns = [c for c in _METRIC_COLUMNS if c[0] not in _FOUND_K_COLUMNS or any(c[0] in row for row in metrics)]
    headings = [heading for _, heading, _ in columns[:1]] + ["prior"] + [h for _, h, _ in columns[1:]]
    rows = []
    for row in metrics:
        cells = [fmt.format(row[key]) if row.get(key) is not None else "n/a" for key, _, fmt in columns]
        cells.insert(1, "N(0, I)" if row["iteration"] == 0 else "GMM")
        rows.append(cells)
    return headings, rows


def _summary(facts, image_shape):
    config = facts.config
    labels = "with labels" if facts.has_labels else "without labels"
    size = "×".join(str(s) for s in image_shape)
    return (f"{facts.n_samples:,} images of {size} pixels from {config.data!r} ({labels}); "
            f"{len(facts.iterations)} rounds of mutual learning (round 0 without, the others with the GMM's "
            f"prior), {_epochs(config)} and {config.gmm_sweeps} Gibbs sweeps each; "
            + (f"K found by the GMM (at most {facts.config.max_clusters} clusters)" if facts.config.finds_k
               else f"K = {facts.n_clusters} clusters") + f", latent dimension L = {facts.latent_dim}.")


def _epochs(config):
    if config.first_round_epochs == config.round_epochs or config.mutual_iterations == 1:
        return f"{config.first_round_epochs} VAE epochs"
    return f"{config.first_round_epochs} VAE epochs in round 0 and {config.round_epochs} in later rounds"


_METRICS_NOTE = ("ELBO of the last epoch (KL weight 1). Accuracy (Hungarian matching), ARI and NMI of the final "
                 "Gibbs sweep; labels are used for scoring only. Time: VAE training plus Gibbs sampling.")


def _generated():
    return f"vaegmm {__version__}, {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"


def resolved_defaults(config):
    """The value each "derived" (None) field of ``config`` stands for, with how it is derived:
    {field: (value used, note)} for the fields left None. Each is resolved where the run
    resolves it, so that the report cannot disagree with training:

    - ``round0_epochs``: :attr:`TrainConfig.first_round_epochs` (half of vae_epochs, rounded up, or
      twice it with a manifold);
    - ``prior_weight``: :meth:`TrainConfig.round_kl_weight` of a round with the GMM prior (kl_weight);
    - ``alpha``: the :class:`~vaegmm.gmm.GibbsGMM` the run builds (:meth:`vaegmm.modules.GMMModule.sampler`)
      resolves it, 0.3, or 0.01 / max_clusters with n_clusters="auto";
    - ``gmm_prior``, ``vae_init``, ``vae_epochs``: what they stand for with the config's
      manifold (:meth:`TrainConfig.followed`);
    - ``wishart_dof``: the GibbsGMM's n_features, the dimension it clusters: latent_dim, or
      manifold_dim with a manifold (as ``gauss_wishart_prior`` too).
    """
    from .gmm import GibbsGMM

    resolved = {}
    if config.round0_epochs is None:
        resolved["round0_epochs"] = (config.first_round_epochs, "default: half of vae_epochs, rounded up"
                                     if config.manifold_used == "none" else "default: twice vae_epochs, with a manifold")
    if config.prior_weight is None:
        resolved["prior_weight"] = (config.round_kl_weight(1), "default: = kl_weight")
    if config.alpha is None:
        gmm = GibbsGMM(config.n_clusters, max_components=config.max_clusters, alpha=None)
        resolved["alpha"] = (gmm._alpha_value(), "default: 0.01 / max_clusters, as K is found"
                             if config.finds_k else "default for a fixed K")
    for field in config.FOLLOW_MANIFOLD:  # gmm_prior, vae_init, vae_epochs: the manifold's choice
        if getattr(config, field) is None:
            resolved[field] = (config.followed(field), f"default with manifold = {config.manifold_used}")
    if config.wishart_dof is None:
        resolved["wishart_dof"] = ((config.latent_dim, "default: = latent_dim") if config.manifold_used == "none"
                                   else (config.manifold_dim, "default: = manifold_dim"))
    return resolved


def _config_items(config):
    """(field, value) rows of the config table; a derived (None) field shows the value used."""
    derived = resolved_defaults(config)
    rows = []
    for key, value in config.to_dict().items():
        if key in derived:
            used, note = derived[key]
            text = f"{used:g} ({note})" if isinstance(used, (int, float)) else f"{used} ({note})"
        elif value is None:
            text = "None"
        else:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        rows.append((key, text))
    return rows


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------
def _md_table(headings, rows):
    lines = ["| " + " | ".join(headings) + " |", "|" + "|".join(" --- " for _ in headings) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(run, facts, summary, rows, figures, notes):
    parts = [
        f"# Run report: {run.path.resolve().name}",
        "",
        summary,
        "",
        f"Generated by {_generated()} from `{run.path}`. Figures are in `figures/`; "
        f"`{REPORT_HTML}` holds the same report with the figures embedded.",
        "",
        "## Metrics per round",
        "",
        _md_table(*rows),
        "",
        _METRICS_NOTE,
        "",
        "## Figures",
        "",
    ]
    for number, figure in enumerate(figures, start=1):
        parts += [f"### Figure {number}. {figure.title}", "",
                  f"![Figure {number}: {figure.title}](figures/{figure.path.name})", "",
                  f"*Figure {number}.* {figure.caption} (`figures/{figure.path.name}`)", ""]
    if notes:
        parts += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    parts += ["## Configuration", "",
              f"`config.json`; rerun with `vaegmm train --config {run.path / 'config.json'}`.", "",
              _md_table(["field", "value"], _config_items(facts.config)), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f3f3f3; } td.key, th.key { text-align: left; font-family: monospace; }
table.config td, table.config th { text-align: left; }
figure { margin: 1.6em 0; padding: 0.8em; border: 1px solid #e4e4e4; border-radius: 4px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { margin-top: 0.6em; font-size: 0.95em; }
.meta, .note { color: #555; font-size: 0.9em; } code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _code_spans(escaped):
    """`text` -> <code>text</code> in already escaped text (captions use Markdown's code spans)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _html_table(headings, rows, key_column=False):
    cls = ' class="key"'
    head = "".join(f"<th{cls if key_column and i == 0 else ''}>{html.escape(h)}</th>" for i, h in enumerate(headings))
    body = "".join(
        "<tr>" + "".join(f"<td{cls if key_column and i == 0 else ''}>{html.escape(c)}</td>" for i, c in enumerate(row))
        + "</tr>" for row in rows)
    table = '<table class="config">' if key_column else "<table>"
    return f"{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(run, facts, summary, rows, figures, notes):
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Run report: {esc(run.path.resolve().name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Run report: {esc(run.path.resolve().name)}</h1>",
        f"<p>{esc(summary)}</p>",
        f'<p class="meta">Generated by {esc(_generated())} from <code>{esc(str(run.path))}</code>. '
        "Self-contained: every figure is embedded.</p>",
        "<h2>Metrics per round</h2>",
        _html_table(*rows),
        f'<p class="note">{esc(_METRICS_NOTE)}</p>',
        "<h2>Figures</h2>",
    ]
    for number, figure in enumerate(figures, start=1):
        encoded = base64.b64encode(figure.path.read_bytes()).decode("ascii")
        parts.append(
            f'<figure id="{esc(figure.path.stem)}"><img src="data:image/png;base64,{encoded}" '
            f'alt="Figure {number}: {esc(figure.title)}">'
            f"<figcaption><b>Figure {number}. {esc(figure.title)}.</b> {_code_spans(esc(figure.caption))} "
            f'<span class="meta">(<code>figures/{esc(figure.path.name)}</code>)</span></figcaption></figure>'
        )
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{_code_spans(esc(note))}</li>" for note in notes] + ["</ul>"]
    parts += ["<h2>Configuration</h2>",
              f'<p class="note"><code>config.json</code>; rerun with '
              f"<code>vaegmm train --config {esc(str(run.path / 'config.json'))}</code>.</p>",
              _html_table(["field", "value"], _config_items(facts.config), key_column=True),
              "</body></html>", ""]
    return "\n".join(parts)
