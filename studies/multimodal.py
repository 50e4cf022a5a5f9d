"""Multimodal categories on the two built-in two-view sets, shipped defaults, seeds 0-4:
mutual, apart, round 0 and each modality alone (docs/multimodal.md).

    python studies/multimodal.py OUT [--jobs 2] [--seeds 0 1 2 3 4] [--sets mnist5k-partner mnist5k-rotated]
    python studies/multimodal.py OUT --sources mfeat-fou mfeat-pix     # one set of paired sources
    python studies/multimodal.py OUT --set joint_covariance=block      # a setting changed (FIELD=VALUE)
"""

import argparse
import json
from pathlib import Path

from vaegmm import TrainConfig
from vaegmm.evaluate import evaluate_multimodal, format_multimodal

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--jobs", type=int, default=2)
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
parser.add_argument("--sets", nargs="+", default=["mnist5k-partner", "mnist5k-rotated"])
parser.add_argument("--sources", nargs="+", help="paired sources evaluated together instead of --sets")
parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="TrainConfig fields changed")
args = parser.parse_args()
def _value(text):  # a number, true/false/null, or else the text itself
    try:
        return json.loads(text)
    except ValueError:
        return text


config = TrainConfig.from_dict({field: _value(value) for field, value in (item.split("=", 1) for item in args.set)})
groups = [args.sources] if args.sources else [[name] for name in args.sets]
for sources in groups:
    name = "+".join(sources)
    evaluation = evaluate_multimodal(sources, config, args.seeds, jobs=args.jobs, out=Path(args.out) / name)
    print(name)
    print(format_multimodal(evaluation), flush=True)
