"""One CPU thread limit for the whole package.

``vaegmm train --threads N`` (Python: :func:`set_threads`) sets it; without it the limit is
torch's own choice (``torch.get_num_threads()``, the number of physical cores). Every CPU-heavy
call runs under it: torch's VAE steps, the Gibbs sweeps' BLAS products, the EM and k-means
starts, the EM read-out and t-SNE. Calls that threads do not speed up take one thread inside
that limit (:data:`ONE_THREAD`), so no library call ever runs more threads than asked, and none
oversubscribes a machine shared with other runs.

Why the EM and k-means starts take one thread: scikit-learn's EM on latents of a few
dimensions makes many small BLAS calls and OpenMP loops, whose threads cost more than they
save. On 5,000 x 12 latents (10 components, 10 restarts, 2-core CPU), one thread took 0.17 s
and two 1.2-1.9 s on a quiet machine, 0.24 s against 3.7 s beside a busy process; at 60,000 x
12, 0.66 s against 1.64 s (``python -m benchmarks.threads``).
"""

from __future__ import annotations

import contextlib

__all__ = ["set_threads", "thread_limit", "limit_threads", "ONE_THREAD"]

ONE_THREAD = 1


def set_threads(threads):
    """Set the package's CPU thread limit (torch's intra-op threads included)."""
    import torch

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}.")
    torch.set_num_threads(threads)


def thread_limit():
    """The package's CPU thread limit: what :func:`set_threads` set, else torch's default."""
    import torch

    return max(1, torch.get_num_threads())


def limit_threads(threads=None):
    """Context running BLAS and OpenMP pools (NumPy, SciPy, scikit-learn) on at most
    ``min(threads, thread_limit())`` threads (``threads=None``: the limit itself)."""
    try:
        from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    limit = thread_limit() if threads is None else min(int(threads), thread_limit())
    return threadpool_limits(limits=limit)
