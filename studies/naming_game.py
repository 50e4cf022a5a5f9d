"""The naming-game study (docs/naming-game.md): the Metropolis-Hastings game against
its two baselines (no communication: every proposal rejected; accept all), over seeds.

    python studies/naming_game.py run --seeds 0-2 --out runs/naming-study [vaegmm naming-game flags ...]
    python studies/naming_game.py table --out runs/naming-study

``run`` calls ``vaegmm naming-game`` once per (mode, seed) into OUT/<mode>-seed<seed> (a finished
one is skipped); ``table`` prints kappa and each agent's ARI / accuracy of the last round, mean ±
std over seeds, per mode. Labels only score.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from accuracy import parse_seeds  # studies/ is on the path when run as a script

MODES = ("mh", "none", "all")


def command_run(args, extra):
    out = Path(args.out)
    for seed in parse_seeds(args.seeds):
        for mode in MODES:
            folder = out / f"{mode}-seed{seed}"
            if (folder / "metrics.json").exists() and len(json.loads((folder / "metrics.json").read_text())["iterations"]) \
                    == args.rounds:
                continue
            command = [sys.executable, "-m", "vaegmm", "naming-game", "--out", str(folder), "--mode", mode,
                       "--seed", str(seed), "--rounds", str(args.rounds), "--overwrite", "--quiet",
                       "--no-figures", *extra]
            print(" ".join(command[2:]), flush=True)
            subprocess.run(command, check=True)


def _cell(values, digits=3):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.{digits}f}"


def command_table(args):
    out = Path(args.out)
    print("| mode | seeds | κ (last round) | agent A ARI | agent B ARI | agent A accuracy | agent B accuracy "
          "| accepted |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in MODES:
        games = [json.loads(path.read_text()) for path in sorted(out.glob(f"{mode}-seed*/metrics.json"))]
        if not games:
            continue
        last = [game["iterations"][-1] for game in games]
        column = lambda agent, key: [record["agents"][agent][key] for record in last]  # noqa: E731
        print(f"| {mode} | {len(games)} | {_cell([r['kappa'] for r in last])} | {_cell(column(0, 'ari'))} | "
              f"{_cell(column(1, 'ari'))} | {_cell(column(0, 'accuracy'))} | {_cell(column(1, 'accuracy'))} | "
              f"{_cell([100 * r['acceptance'] for r in last], 1)} % |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="play every mode for every seed (other flags go to vaegmm naming-game)")
    run.add_argument("--seeds", default="0-2")
    run.add_argument("--rounds", type=int, default=3, help="--rounds of every game")
    run.add_argument("--out", default="runs/naming-study")
    table = sub.add_parser("table", help="print the last round of every game as a markdown table")
    table.add_argument("--out", default="runs/naming-study")
    args, extra = parser.parse_known_args(argv)
    if args.command == "run":
        command_run(args, extra)
    else:
        if extra:
            parser.error(f"unrecognised arguments: {' '.join(extra)}")
        command_table(args)


if __name__ == "__main__":
    main()
