"""End to end: the reference configuration against the shipped defaults, on the embedded digits.

Reference configuration: ``TrainConfig(**REFERENCE)`` (2 rounds of 100 VAE epochs at batch size
10 and 100 Gibbs sweeps, the last sweep's cluster as the prior, no augmentation). Ours:
``TrainConfig()``. Wall time of ``fit_mutual`` (no run directory, no figures) and the final
round's accuracy (Hungarian).
"""

from __future__ import annotations

import time

from vaegmm.config import REFERENCE, TrainConfig
from vaegmm.data import load_dataset
from vaegmm.mutual import fit_mutual

CONFIGURATIONS = {
    "reference (batch 10)": REFERENCE,
    "defaults": {},
}


def run(*, seed=0, device="cpu", names=None, log=print):
    dataset = load_dataset("mnist5k")
    results = []
    for name, changes in CONFIGURATIONS.items():
        if names and name not in names:
            continue
        config = TrainConfig(seed=seed, device=device, **changes)
        started = time.perf_counter()
        result = fit_mutual(dataset, config, progress=False, log=None)
        seconds = time.perf_counter() - started
        final = result.rounds[-1].metrics
        row = {"configuration": name, "batch_size": config.batch_size, "seconds": seconds,
               "accuracy": final["accuracy"], "ari": final["ari"],
               "gmm_seconds": sum(r.metrics["gmm_seconds"] for r in result.rounds)}
        results.append(row)
        if log is not None:
            log(f"  end to end {name}: {seconds:.1f} s, accuracy {final['accuracy']:.4f}")
    return results


COLUMNS = [
    ("configuration", "configuration", None),
    ("batch_size", "batch size", None),
    ("seconds", "wall time (s)", "{:.1f}"),
    ("gmm_seconds", "of which GMM (s)", "{:.1f}"),
    ("accuracy", "final accuracy", "{:.4f}"),
    ("ari", "final ARI", "{:.4f}"),
]
