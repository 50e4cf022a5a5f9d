"""``python -m benchmarks``: run the benchmarks, print Markdown tables, write them as JSON.

    python -m benchmarks                  # Gibbs sweeps at N = 1k, 10k, 60k, 200k (K=10, L=12)
                                          #   and K=50, L=32 at N=60k; sklearn; reference-style
    python -m benchmarks --quick          # a smoke run: N = 1k and 10k, fewer repeats
    python -m benchmarks --vae            # + VAE epoch time per batch size (minutes)
    python -m benchmarks --end-to-end     # + reference configuration vs defaults (long)
    python -m benchmarks --json out.json  # where the results go (default benchmarks.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch


def _machine():
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fast smoke run (small N, fewer repeats)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per figure (median taken)")
    parser.add_argument("--no-gibbs", action="store_true", help="skip the Gibbs sweep benchmark")
    parser.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn's BayesianGaussianMixture")
    parser.add_argument("--reference-max-n", type=int, default=None,
                        help="largest N for the reference-style sampler (default 10,000; 1,000 with --quick)")
    parser.add_argument("--torch", action="store_true",
                        help="also time the torch backend of the sampler (on --device)")
    parser.add_argument("--vae", action="store_true", help="VAE epoch time per batch size (minutes)")
    parser.add_argument("--vae-budget", type=float, default=30.0,
                        help="seconds of VAE training per batch size for the accuracy column (0: skip)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="reference configuration vs defaults, full runs (the reference one takes long)")
    parser.add_argument("--device", default="cpu", help="torch device for --torch, --vae and --end-to-end")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before running")
    parser.add_argument("--json", default="benchmarks.json", help="where to write the results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from . import end_to_end, gibbs, vae_epochs
    from ._timing import format_table

    report = {"machine": _machine(), "arguments": vars(args), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(f"machine: {report['machine']['processor']}, {report['machine']['cpu_count']} CPUs, "
          f"load average {report['machine']['load_average_at_start']}", flush=True)
    tables = []
    if not args.no_gibbs:
        rows = gibbs.run(quick=args.quick, repeats=args.repeats, reference_max_n=args.reference_max_n,
                         sklearn=not args.no_sklearn, torch_device=args.device if args.torch else None)
        report["gibbs"] = rows
        tables.append(("Gibbs sweep", format_table(rows, gibbs.columns(rows))))
    if args.vae:
        rows = vae_epochs.run(repeats=args.repeats or 3, budget_seconds=args.vae_budget, device=args.device)
        report["vae"] = rows
        tables.append(("VAE epoch (5,000 embedded MNIST digits)", format_table(rows, vae_epochs.COLUMNS)))
    if args.end_to_end:
        rows = end_to_end.run(device=args.device)
        report["end_to_end"] = rows
        tables.append(("End to end", format_table(rows, end_to_end.COLUMNS)))
    try:
        report["load_average_at_end"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    for title, table in tables:
        print(f"\n### {title}\n\n{table}")
    with open(args.json, "w") as handle:
        json.dump(report, handle, indent=2, default=float)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
