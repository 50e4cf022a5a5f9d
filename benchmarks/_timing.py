"""Small helpers shared by the benchmarks: medians of repeats, peak traced memory, tables."""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc


def _wall_times(function, repeats):
    """Wall times of ``repeats`` calls of ``function()`` (each after garbage collection)."""
    times = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def min_seconds(function, repeats):
    """Shortest wall time of ``function()`` over ``repeats`` calls: the least disturbed by other
    work on the machine, for differences of two timings."""
    return min(_wall_times(function, repeats))


def median_seconds(function, repeats):
    """Median wall time of ``function()`` over ``repeats`` calls (after garbage collection)."""
    return statistics.median(_wall_times(function, repeats))


def peak_traced_bytes(function):
    """Peak memory traced by tracemalloc while ``function()`` runs, above the level before it."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def format_table(rows, columns):
    """A Markdown table of ``rows`` (dicts) with ``columns`` = [(key, header, format), ...]."""
    header = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "| " + " | ".join("---" for _ in columns) + " |"
    lines = [header, rule]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("—" if value is None else (fmt.format(value) if fmt else str(value)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
