"""Command-line interface: ``vaegmm train | naming-game | decode | plot-gmm | figures | report | evaluate |
predict``.

Errors a user can cause are printed as one sentence on stderr with exit status 2 (``--debug``
shows the traceback instead).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

from .config import TrainConfig
from .data import BUILTIN_DATASETS
from .data import SUITE as _SUITE
from .multimodal import TWO_VIEW_SETS

# The flags named differently from their TrainConfig field (the reference's names); every other
# field's flag is the field's name (``--kl-weight`` -> ``kl_weight``).
# Flags named otherwise than their field, and the fields set only by --set FIELD=VALUE (the accuracy
# study found them of no use, docs/accuracy.md, so they do not crowd the flags): from the fields' metadata.
_RENAMED_FLAGS = {f.name: f.metadata["flag"] for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag")}
SET_ONLY = tuple(f.name for f in dataclasses.fields(TrainConfig) if "help" not in f.metadata)


def _parser():
    parser = argparse.ArgumentParser(
        prog="vaegmm",
        description="Mutual learning between a VAE and a Bayesian GMM (Neuro-SERKET style).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train VAE+GMM by mutual learning and write a run directory")
    train.add_argument("--out", help="run directory to write (default: runs/default; with --resume, the run's own)")
    train.add_argument("--config", help="config.json of an earlier run to reproduce; flags given override it")
    train.add_argument("--overwrite", action="store_true",
                       help="delete the run already in --out (finished, interrupted or different) and train anew")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the interrupted run in DIR from its checkpoint (its saved config; "
                            "flags that change it are refused)")
    train.add_argument("--checkpoint-every", type=int, default=10,
                       help="write a checkpoint every this many VAE epochs (default: %(default)s)")
    train.add_argument("--no-figures", action="store_true", help="skip the figures and the report at the end")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    _add_config_arguments(train)

    evaluate = commands.add_parser(
        "evaluate", help="train several seeds; score round 0, VAE-then-GMM apart, and mutual learning")
    evaluate.add_argument("--out", default="runs/evaluation", help="folder for evaluation.json/png (default: %(default)s)")
    evaluate.add_argument("--config", help="config.json whose settings to evaluate; flags given override it")
    evaluate.add_argument("--seeds", type=_int_list, default=(0, 1, 2, 3, 4),
                          help="comma-separated seeds (default: 0,1,2,3,4)")
    evaluate.add_argument("--suite", nargs="?", const=",".join(_SUITE), metavar="DATASETS",
                          help="score on every dataset of a suite instead of --data: comma-separated names or "
                               f"paths (alone: {','.join(_SUITE)}); per dataset and overall")
    evaluate.add_argument("--jobs", type=int, default=1, help="seeds trained in parallel processes (default: %(default)s)")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads with --jobs 1 (default: torch's choice)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an evaluation already in --out")
    _add_config_arguments(evaluate)

    game = commands.add_parser(
        "naming-game", help="two VAE+GMM agents (the images, and the images rotated) name the data by a "
                            "Metropolis-Hastings naming game")
    game.add_argument("--out", default="runs/naming-game", help="directory to write (default: %(default)s)")
    game.add_argument("--mode", choices=("mh", "none", "all"), default="mh",
                      help="the listener's rule: the Metropolis-Hastings test, reject all (no communication) "
                           "or accept all (default: %(default)s)")
    game.add_argument("--start", choices=("own", "random"), default="own",
                      help="the signs in round 0: each agent's own GMM chain, agent B's categories renamed after "
                           "the signs A speaks; or uniformly at random, the paper's (default: %(default)s)")
    game.add_argument("--rotation", type=float, default=45.0,
                      help="degrees by which agent B's view is rotated (default: %(default)s)")
    game.add_argument("--config", help="config.json whose settings both agents use; flags given override it")
    game.add_argument("--overwrite", action="store_true", help="replace the game --out holds")
    game.add_argument("--resume", metavar="DIR",
                      help="continue the interrupted game in DIR from its checkpoint (its saved settings)")
    game.add_argument("--no-figures", action="store_true", help="skip the figures and the reports at the end")
    game.add_argument("--quiet", action="store_true", help="no progress bars")
    game.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    _add_config_arguments(game)

    predict = commands.add_parser("predict", help="cluster new images with a trained run's encoder and GMM")
    predict.add_argument("--run", required=True, help="run directory written by `vaegmm train`")
    predict.add_argument("--data", required=True, action="append",
                         help="images to cluster (as train's --data). For a multimodal run, once per modality "
                              "given, as NAME=PATH (NAME: vae_0, vae_1, ...) or PATH in the modalities' order; "
                              "any subset: the missing modalities are recalled")
    predict.add_argument("--round", "--iteration", dest="iteration", type=int, help="round to use (default: the last)")
    predict.add_argument("--out", help="folder for predictions.csv, assignments.npy, probabilities.npy "
                                       "(default: RUN/predictions)")

    decode = commands.add_parser("decode", help="decode latents sampled from one GMM cluster into a PNG grid")
    _add_run_arguments(decode)
    decode.add_argument("--samples", type=int, default=16, help="number of images (default: %(default)s)")

    plot_gmm = commands.add_parser("plot-gmm", help="plot one cluster's density, samples and all cluster means")
    _add_run_arguments(plot_gmm)
    plot_gmm.add_argument("--samples", type=int, default=100, help="points sampled from the cluster (default: %(default)s)")
    plot_gmm.add_argument("--dims", default="0,1", help="two latent dimensions 'i,j', or 'pca' (default: %(default)s)")

    figures = commands.add_parser("figures", help="(re)write every figure of a run into RUN/figures")
    figures.add_argument("--run", required=True, help="run directory")

    report = commands.add_parser(
        "report", help="write RUN/report.html (self-contained) and RUN/report.md: config, metrics, captioned figures "
                       "(for a naming game: its report.md and each agent's report)")
    report.add_argument("--run", required=True, help="run directory")
    report.add_argument("--refresh-figures", action="store_true",
                        help="rewrite every figure first (default: only when RUN/figures has none)")
    return parser


def _shown(value):
    """A default as --help shows it."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _argument_type(field):
    """The argparse type of a TrainConfig field, from its annotation."""
    annotation = str(field.type)
    if annotation.startswith("Tuple"):
        return _int_list
    if annotation.startswith("Union[int, str]"):
        return _clusters
    for name, kind in (("int", int), ("float", float)):
        if annotation in (name, f"Optional[{name}]"):
            return kind
    return str


def _add_config_arguments(parser):
    """The TrainConfig flags, shared by train, evaluate and naming-game (None: keep the config's
    value), generated from the fields' metadata (:func:`vaegmm.config._option`): group, help,
    flag name; choices from ``TrainConfig.CHOICES``."""
    defaults = TrainConfig()
    groups = {}
    names = {"builtin": ", ".join(BUILTIN_DATASETS), "two_view": ", ".join(TWO_VIEW_SETS)}
    for field in dataclasses.fields(TrainConfig):
        if "help" not in field.metadata:
            continue  # set with --set only
        meta = field.metadata
        if meta["group"] not in groups:
            title = meta["group"]
            groups[meta["group"]] = parser.add_argument_group(title)
        shown = meta["shown"] or _shown(getattr(defaults, field.name))
        options = {"help": meta["help"].format(default=shown, **names)}
        if field.name == "data":
            options["action"] = "append"  # once per modality
        elif field.name in TrainConfig.CHOICES:
            options["choices"] = TrainConfig.CHOICES[field.name]
        else:
            options["type"] = _argument_type(field)
        aliases = ["--" + alias.replace("_", "-") for alias in meta.get("aliases", ())]
        groups[meta["group"]].add_argument(_flag(field.name), *aliases, **options)
    group = groups["run"]
    group.add_argument("--no-cuda", action="store_true", help="same as --device cpu (the reference's flag)")
    group.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", type=_field_value,
                       help="set any TrainConfig field by name, VALUE as JSON or a plain string "
                            "(e.g. --set prior_sweeps=20); repeatable, applied after the flags. The settings "
                            "the accuracy study found of no use have no flag of their own: "
                            + ", ".join(SET_ONLY))


def _add_run_arguments(parser):
    parser.add_argument("--run", required=True, help="run directory written by `vaegmm train`")
    parser.add_argument("--round", "--iteration", dest="iteration", type=int, help="round to load (default: the last)")
    parser.add_argument("--cluster", type=int, default=0, help="cluster k (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the samples (default: %(default)s)")
    parser.add_argument("--out", help="PNG to write (default: in RUN/figures)")


def _int_list(text):
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _clusters(text):
    """--clusters: a positive integer or "auto"."""
    if text.strip() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of clusters or auto, got {text!r}") from None


def _field_value(text):
    """``FIELD=VALUE`` of --set: (field, value), the value parsed as JSON where it is JSON."""
    field, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    value = _json_or_text(value)
    return field.strip(), tuple(value) if isinstance(value, list) else value


def _json_or_text(text):
    """``text`` parsed as JSON (20, 0.5, [64, 32], null), or the text itself (a plain string: last)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _flag(field):
    """The CLI flag of a TrainConfig field (``--set field=...`` for those without one)."""
    if field in SET_ONLY:
        return f"--set {field}=..."
    return "--" + _RENAMED_FLAGS.get(field, field).replace("_", "-")


def _with_flags(message):
    """A library error names TrainConfig fields; the CLI adds the flags that set them."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    # A one-word field (data, seed, alpha, ...) counts only where the message uses it as a name.
    after = r"(?= =| must| is| \()"
    mentioned = [name for name in names
                 if re.search(rf"(?<![\w-]){name}(?![\w-])" + ("" if "_" in name else after), message)]
    if not mentioned:
        return message
    return f"{message} (set by {', '.join(f'{_flag(name)}' for name in mentioned)})"


def _train_config(args, base=None):
    if base is not None:
        config = base
    elif getattr(args, "resume", None):
        from .rundir import RunDirectory

        if args.config:
            raise ValueError("--resume continues the run's own config.json; drop --config.")
        config = RunDirectory(args.resume).load_config()
    else:
        config = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    given = {field.name: getattr(args, _RENAMED_FLAGS.get(field.name, field.name), None)  # a field may have no flag
             for field in dataclasses.fields(TrainConfig)}
    if given["data"] is not None:  # --data once, or once per modality (recorded joined by "+")
        given["data"] = "+".join(given["data"])
    overrides = {field: value for field, value in given.items() if value is not None}
    if args.no_cuda:
        overrides["device"] = "cpu"
    names = [field.name for field in dataclasses.fields(TrainConfig)]
    for field, value in args.set:
        if field not in names:
            raise ValueError(f"--set {field}=...: expected FIELD=VALUE with FIELD one of TrainConfig's fields "
                             f"({', '.join(names)}).")
        overrides[field] = value
    return config.replace(**overrides)


def _sources(args, config):
    """The data sources of a run: one, or one per modality."""
    return list(args.data) if args.data else [config.data]


def _is_multimodal(sources):
    return len(sources) > 1 or sources[0] in TWO_VIEW_SETS


def _resumed(args):
    """(settings, config) of the engine run in ``args.resume`` (graph.json), refusing flags that
    would change them."""
    from .engine import read_settings

    settings = read_settings(args.resume)
    if args.config or args.data:
        raise ValueError("--resume continues the run's own settings; drop --config and --data.")
    config = TrainConfig.from_saved(settings["config"])
    changed = _train_config(args, base=config).differences(config)
    if changed:
        raise ValueError(f"Cannot resume {args.resume} with other settings: {', '.join(changed)}; resume with the "
                         "saved settings or start a new run in another directory.")
    return settings, config


def _train_multimodal(args):
    """``vaegmm train`` with several --data (or a two-view set): multimodal categories."""
    from .distributed import from_environment
    from .multimodal import fit_multimodal, load_views, write_multimodal_report
    from .mutual import resolve_device

    if args.resume:
        settings, config = _resumed(args)
        sources = settings["sources"]
    else:
        config = _train_config(args)
        sources = _sources(args, config)
    device = resolve_device(config.device)  # fail now, not after loading the data
    _set_threads(args.threads)
    context = from_environment(device.type)  # under torchrun one rank of P, else the single process
    say = print if context.is_main else (lambda *_: None)
    views, labels = load_views(sources, max_samples=config.max_samples, seed=config.seed)
    ranks = f", {context.world_size} processes" if context.active else ""
    say(f"data: {len(views)} modalities of {len(labels) if labels is not None else len(views[0])} paired rows: "
        + ", ".join(f"{v.name} ({v.image_shape[0]}x{v.image_shape[1]})" for v in views)
        + (" (with labels)" if labels is not None else " (no labels)") + ranks)
    result = _fit_on_ranks(context, lambda stop_requested, log: fit_multimodal(
        views, config, labels=labels, sources=sources, run_dir=args.out, overwrite=args.overwrite,
        resume=bool(args.resume), progress=not args.quiet, stop_requested=stop_requested, distributed=context,
        log=log))
    if result is None or not context.is_main:
        return 0
    written = ""
    if not args.no_figures:
        write_multimodal_report(args.out)
        written = ", figures/, report.md"
    print(f"wrote {args.out} (graph.json, metrics.json, round_*/{written})")
    first, last = result.rounds[0], result.rounds[-1]
    if "accuracy" in first and len(result.rounds) > 1:
        print(f"accuracy: round 0 {first['accuracy']:.4f} -> round {last['round']} {last['accuracy']:.4f}")
    return 0


def _cmd_train(args):
    from .data import load_dataset, open_mapped
    from .distributed import from_environment, shutdown
    from .figures import write_figures
    from .mutual import fit_mutual, resolve_device
    from .report import write_report
    from .rundir import RunComplete, RunDirectory

    if args.resume:
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise ValueError(f"--resume continues {args.resume} in place; drop --out {args.out} "
                             "(to copy a run elsewhere, copy its directory first).")
        if args.overwrite:
            raise ValueError("--resume continues a run and --overwrite deletes it; give one of them.")
        args.out = args.resume
    elif args.out is None:
        args.out = "runs/default"
    if (Path(args.resume) / "graph.json").exists() if args.resume else _is_multimodal(args.data or ["-"]):
        return _train_multimodal(args)
    config = _train_config(args)
    device = resolve_device(config.device)  # fail now, not after loading the data
    _set_threads(args.threads)
    context = from_environment(device.type)  # under torchrun one rank of P, else the single process
    say = print if context.is_main else (lambda *_: None)
    finished = None
    if context.is_main:  # the other ranks never touch the run directory
        if args.resume:
            RunDirectory(args.out).check_resumable(config)  # refuses a changed config before loading data
        else:
            try:
                RunDirectory(args.out).check_replaceable(config, args.overwrite)  # before loading any data
            except RunComplete as done:
                finished = str(done)
    if context.active:  # every rank learns whether there is anything to do
        finished = context.broadcast_object(finished)
    if finished is not None:  # the same command again: the finished run stays as it is
        shutdown(context)
        say(f"vaegmm: {finished}")
        return 0
    # Distributed, a .npy or IDX file is memory-mapped: each rank reads only its shard.
    dataset = open_mapped(config.data) if context.active and config.max_samples is None else None
    if dataset is None:
        dataset = load_dataset(config.data, max_samples=config.max_samples, seed=config.seed)
    labels = "with labels" if dataset.labels is not None else "no labels"
    ranks = f", {context.world_size} processes" if context.active else ""
    say(f"data: {dataset.name}, {len(dataset)} images of {dataset.image_shape[0]}x{dataset.image_shape[1]} "
        f"({labels}){ranks}")
    result = _fit_on_ranks(context, lambda stop_requested, log: fit_mutual(
        dataset, config, run_dir=args.out, progress=not args.quiet, overwrite=args.overwrite,
        resume=bool(args.resume), checkpoint_every=args.checkpoint_every, stop_requested=stop_requested,
        distributed=context, log=log))
    if result is None or not context.is_main:
        return 0
    if not args.no_figures:
        write_figures(args.out)
        write_report(args.out)
    first, last = result.rounds[0].metrics, result.rounds[-1].metrics
    written = "" if args.no_figures else ", figures/, report.html, report.md"
    print(f"wrote {args.out} (config.json, metrics.json, iteration_*/{written})")
    if first["accuracy"] is not None and len(result.rounds) > 1:
        print(f"accuracy: round 0 {first['accuracy']:.4f} -> round {last['iteration']} {last['accuracy']:.4f}")
    return 0


def _iteration(args):
    from .rundir import RunDirectory, RunError

    if args.iteration is not None:
        return args.iteration
    available = RunDirectory(args.run).iterations()
    if not available:
        raise RunError(f"{args.run} holds no completed round; train one with `vaegmm train --out {args.run}`.")
    return available[-1]


def _cmd_decode(args):
    from .figures import DECODED, decode_from_gmm_param

    iteration = _iteration(args)
    path = Path(args.out) if args.out else Path(args.run) / "figures" / DECODED.file(iteration=iteration, cluster=args.cluster)
    decode_from_gmm_param(iteration, args.cluster, args.samples, args.run, seed=args.seed, path=path)
    print(f"wrote {path}")
    return 0


def _cmd_plot_gmm(args):
    from .figures import plot_dist

    dims = "pca" if args.dims == "pca" else _int_list(args.dims)
    iteration = _iteration(args)
    path = plot_dist(iteration, args.cluster, args.samples, args.run, dims=dims, seed=args.seed,
                     path=Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


def _is_multimodal_run(run):
    return (Path(run) / "graph.json").exists() and not (Path(run) / "game.json").exists()


def _cmd_figures(args):
    from .figures import write_figures
    from .multimodal import write_multimodal_report

    paths = write_multimodal_report(args.run) if _is_multimodal_run(args.run) else write_figures(args.run)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _cmd_report(args):
    from .naming_game import AGENT_NAMES, write_game_report
    from .report import write_report

    if _is_multimodal_run(args.run):  # multimodal categories: its figures and report.md
        from .multimodal import write_multimodal_report

        paths = write_multimodal_report(args.run)
    elif (Path(args.run) / "game.json").exists():  # a naming game: its own report, and each agent's
        paths = write_game_report(args.run)
        for name in AGENT_NAMES:
            paths += write_report(Path(args.run) / name, refresh_figures=args.refresh_figures)
    else:
        paths = write_report(args.run, refresh_figures=args.refresh_figures)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _cmd_evaluate(args):
    from .evaluate import evaluate, evaluate_suite, format_suite, format_summary

    config = _train_config(args)
    _set_threads(args.threads)
    written = Path(args.out) / ("suite.json" if args.suite is not None else "evaluation.json")
    if written.exists() and not args.overwrite:
        raise ValueError(f"{written} already holds an evaluation; choose another --out or pass --overwrite to "
                         "replace it.")
    if args.suite is not None:
        datasets = [name.strip() for name in args.suite.split(",") if name.strip()]
        print(f"evaluating {len(args.seeds)} seeds on each of {', '.join(datasets)} (labels used for scoring only)")
        suite = evaluate_suite(config, datasets, args.seeds, jobs=args.jobs, out=args.out)
        for line in format_suite(suite):
            print(line)
        print(f"wrote {Path(args.out) / 'suite.json'} and one folder per dataset")
        return 0
    sources = _sources(args, config)
    if _is_multimodal(sources):
        from .evaluate import evaluate_multimodal, format_multimodal

        print(f"evaluating {len(args.seeds)} seeds on the paired modalities {', '.join(sources)}: mutual, apart, "
              "round 0 and each modality alone (labels used for scoring only)")
        evaluation = evaluate_multimodal(sources, config, args.seeds, jobs=args.jobs, out=args.out)
        print(format_multimodal(evaluation))
        print(f"wrote {Path(args.out) / 'evaluation.json'}")
        return 0
    print(f"evaluating {len(args.seeds)} seeds on {config.data} (labels used for scoring only)")
    evaluation = evaluate(config, args.seeds, jobs=args.jobs, out=args.out)
    for line in format_summary(evaluation):
        print(line)
    print(f"wrote {Path(args.out) / 'evaluation.json'} and {Path(args.out) / 'evaluation.png'}")
    return 0


def _cmd_naming_game(args):
    from .data import load_dataset
    from .distributed import from_environment
    from .figures import write_figures
    from .mutual import resolve_device
    from .naming_game import AGENT_NAMES, fit_naming_game, write_game_report
    from .report import write_report

    if args.resume:
        if args.overwrite:
            raise ValueError("--resume continues a game and --overwrite deletes it; give one of them.")
        settings, config = _resumed(args)
        args.out, args.mode, args.rotation = args.resume, settings["mode"], settings["rotation"]
        args.start = settings.get("start", "random")
    else:
        config = _train_config(args)
        if args.data and len(args.data) > 1:
            raise ValueError("naming-game takes one --data (agent B sees it rotated); drop the others.")
    device = resolve_device(config.device)
    _set_threads(args.threads)
    context = from_environment(device.type)  # under torchrun one rank of P, else the single process
    say = print if context.is_main else (lambda *_: None)
    dataset = load_dataset(config.data, max_samples=config.max_samples, seed=config.seed)
    ranks = f"; {context.world_size} processes" if context.active else ""
    say(f"data: {dataset.name}, {len(dataset)} images; agent A sees them, agent B rotated by {args.rotation:g} "
        f"degrees; listener's rule: {args.mode}; signs start: {args.start}{ranks}")
    result = _fit_on_ranks(context, lambda stop_requested, log: fit_naming_game(
        dataset, config, mode=args.mode, start=args.start, rotation=args.rotation, run_dir=args.out,
        overwrite=args.overwrite, resume=bool(args.resume), progress=not args.quiet, stop_requested=stop_requested,
        distributed=context, log=log))
    if result is None or not context.is_main:
        return 0
    if not args.no_figures:
        for name in AGENT_NAMES:
            write_figures(Path(args.out) / name)
            write_report(Path(args.out) / name)
        write_game_report(args.out)
    print(f"wrote {args.out} (game.json, metrics.json, agent_a/, agent_b/"
          + ("" if args.no_figures else ", figures/, report.md") + ")")
    last = result.iterations[-1]
    print(f"kappa {last['kappa']:.4f}; ARI A {last['agents'][0]['ari']}, B {last['agents'][1]['ari']}"
          if last["agents"][0]["ari"] is None else
          f"kappa {last['kappa']:.4f}; ARI A {last['agents'][0]['ari']:.4f}, B {last['agents'][1]['ari']:.4f}")
    return 0


def _set_threads(threads):
    """--threads: the package's one CPU thread limit (:mod:`vaegmm.threads`)."""
    from .threads import set_threads

    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be positive, got {threads}.")
        set_threads(threads)


def _cmd_predict(args):
    from .evaluate import predict, save_predictions

    out = Path(args.out) if args.out else Path(args.run) / "predictions"
    if (Path(args.run) / "graph.json").exists():
        import numpy as np

        from .multimodal import predict_multimodal

        sources = {}
        for index, given in enumerate(args.data):
            name, _, path = given.partition("=") if "=" in given else (f"vae_{index}", "", given)
            sources[name] = path
        prediction = predict_multimodal(args.run, sources, iteration=args.iteration)
        paths = save_predictions(prediction, out)
        for name, images in prediction["recalled"].items():
            np.save(out / f"recalled_{name}.npy", images)
            paths.append(out / f"recalled_{name}.npy")
    else:
        if len(args.data) > 1:
            raise ValueError(f"{args.run} is a single-modality run; give one --data.")
        prediction = predict(args.run, args.data[0], iteration=args.iteration)
        paths = save_predictions(prediction, out)
    for path in paths:
        print(f"wrote {path}")
    if prediction["metrics"] is not None:
        scores = "  ".join(f"{k} {v:.4f}" if v is not None else f"{k} n/a" for k, v in prediction["metrics"].items())
        print(f"round {prediction['iteration']}: {scores}")
    return 0


def _fit_on_ranks(context, fit):
    """``fit(stop_requested, log)`` on this rank (every rank of a torchrun run calls it), with
    Ctrl-C deferred to the next checkpoint; then leave the process group. Returns its result, or
    None when the run directory already holds this finished run (every rank hears it: the engine
    broadcasts rank 0's check; rank 0 says so). A stop re-raises on every rank after the checkpoint.
    Any other error leaves the group as it is: this process exits and torchrun stops the others."""
    from .distributed import shutdown
    from .rundir import RunComplete

    try:
        with _DeferredInterrupt() as interrupt:
            result = fit(lambda: interrupt.requested, print if context.is_main else None)
    except RunComplete as done:
        shutdown(context)
        if context.is_main:
            print(f"vaegmm: {done}")
        return None
    except KeyboardInterrupt:
        shutdown(context)
        raise
    shutdown(context)
    return result


class _DeferredInterrupt:
    """Context in which a first Ctrl-C (SIGINT) only sets ``requested``; the training loop then
    saves a checkpoint at the next epoch end and stops. A second Ctrl-C interrupts at once.
    Outside the main thread it does nothing."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C interrupts at once

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")  # the CLI draws into files only; the library leaves the backend alone
    args = _parser().parse_args(argv)
    command = {"train": _cmd_train, "decode": _cmd_decode, "plot-gmm": _cmd_plot_gmm, "figures": _cmd_figures,
               "report": _cmd_report, "evaluate": _cmd_evaluate, "predict": _cmd_predict,
               "naming-game": _cmd_naming_game}
    from .distributed import exit_process, launched_by_torchrun

    try:
        code = command[args.command](args)
    except KeyboardInterrupt:
        code = 130
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone says it
            run = getattr(args, "resume", None) or getattr(args, "out", None)
            launcher = "torchrun --nproc_per_node=P -m vaegmm" if launched_by_torchrun() else "vaegmm"
            saved = {"train": f"; the last checkpoint is saved; continue with `{launcher} train --resume {run}`",
                     "naming-game": f"; the last checkpoint is saved; continue with `vaegmm naming-game --resume {run}`"}
            print(f"vaegmm: interrupted{saved.get(args.command, '')}.", file=sys.stderr)
    except (ValueError, OSError, FloatingPointError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"vaegmm: error: {_with_flags(str(exc))}", file=sys.stderr)
        code = 2
    if launched_by_torchrun():  # one rank of P: leave without torch's teardown (see exit_process)
        exit_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
