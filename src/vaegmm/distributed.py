"""One run on many processes with ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

Launched by ``torchrun --nproc_per_node=P -m vaegmm train ...``; torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous, and :func:`from_environment` joins the
process group. Each of the P processes (ranks) owns a contiguous **shard** of the data,
``[N r / P, N (r + 1) / P)``:

- **VAE step**: :class:`torch.nn.parallel.DistributedDataParallel`; every rank trains on
  minibatches of ``batch_size / P`` data of its own shard (their global indices, so each datum
  keeps its own prior) and the gradients are averaged, so one step sees ``batch_size`` data in
  all, as in one process: ``batch_size`` is a setting of the model, not of the launch. The
  latents are encoded per shard and all-gathered.
- **Gibbs step**: every rank draws the assignments of its shard given (pi, mu, Lambda) with
  :func:`counter_uniforms` (one uniform per datum and sweep from the datum's global index, so
  the draw does not depend on P); the clusters' sufficient statistics (K (1 + L + L^2) numbers)
  are all-reduced; rank 0's draw of the parameters is broadcast. A P-process chain is therefore
  the chain of one process under ``torchrun`` up to the order of floating-point sums.
- Rank 0 alone writes the run directory, logs and shows progress.

:data:`SINGLE` is the context of an ordinary single process: every collective is the identity.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Context", "SINGLE", "from_environment", "counter_uniforms", "CounterUniforms", "shard_bounds",
           "launched_by_torchrun", "shutdown", "exit_process", "ShardedSweepData"]

# SplitMix64 (Steele, Lea & Flood 2014): a Weyl sequence of this increment, then a bijective mixer.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x):
    """SplitMix64's finaliser, element-wise on a uint64 array (arithmetic modulo 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def counter_uniforms(seed, counter, start, stop):
    """Uniforms in [0, 1) for the data ``start .. stop - 1`` of draw ``counter`` (e.g. the sweep).

    A counter-based generator: the value for datum n is a function of (seed, counter, n) only,
    the n-th output of a SplitMix64 stream whose start is hashed from (seed, counter). So the
    draws of data split over any number of processes equal those of one process.

    Returns
    -------
    uniforms : ndarray of shape (stop - start,), float64, multiples of 2^-53
    """
    with np.errstate(over="ignore"):
        key = _mix(np.array([seed], dtype=np.uint64) * _GOLDEN + _mix(np.array([counter], dtype=np.uint64) + _GOLDEN))
        index = np.arange(start, stop, dtype=np.uint64) + np.uint64(1)
        bits = _mix(key + index * _GOLDEN)
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class CounterUniforms:
    """Stands in for a ``numpy.random.Generator`` where only ``random(n)`` is drawn (the draw of
    z): call ``k`` returns :func:`counter_uniforms` ``(seed, k, offset, offset + n)``."""

    def __init__(self, seed, offset):
        self.seed, self.offset, self.calls = int(seed) % 2**64, int(offset), 0

    def random(self, n):
        values = counter_uniforms(self.seed, self.calls, self.offset, self.offset + int(n))
        self.calls += 1
        return values


def shard_bounds(n_samples, rank, world_size):
    """The contiguous shard [start, stop) of ``rank`` among ``world_size`` (sizes differ by at most 1)."""
    return n_samples * rank // world_size, n_samples * (rank + 1) // world_size


@dataclass(frozen=True)
class Context:
    """Where this process stands in the run: its ``rank`` of ``world_size``, and the device its
    collectives use (CPU for gloo, its GPU for NCCL). Methods are collectives: every rank must
    call them in the same order."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # where collective tensors live
    active: bool = False  # a process group exists (True under torchrun, even with one process)

    @property
    def is_main(self):
        return self.rank == 0

    def shard(self, n_samples):
        return shard_bounds(n_samples, self.rank, self.world_size)

    def all_reduce_sum(self, array):
        """The element-wise sum over ranks of a float64 array (of the same shape on every rank)."""
        if not self.active:
            return np.asarray(array, dtype=np.float64)
        import torch.distributed as dist

        tensor = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float64), device=self.device).clone()
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def any(self, flag):
        """True on every rank if ``flag`` is True on any (``flag`` itself in a single process)."""
        if not self.active:
            return bool(flag)
        return bool(self.all_reduce_sum(np.array([float(bool(flag))]))[0] > 0)

    def broadcast(self, array):
        """Rank 0's array (same shape and dtype on every rank) on every rank."""
        if not self.active:
            return array
        import torch.distributed as dist

        tensor = torch.as_tensor(np.ascontiguousarray(array), device=self.device).clone()
        dist.broadcast(tensor, src=0)
        return tensor.cpu().numpy()

    def broadcast_object(self, obj):
        """Rank 0's picklable object on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        holder = [obj]
        dist.broadcast_object_list(holder, src=0, device=torch.device(self.device))
        return holder[0]

    def all_gather_rows(self, local, n_samples):
        """The (n_samples, ...) array whose shard of every rank is that rank's ``local`` rows."""
        if not self.active or self.world_size == 1:
            return np.asarray(local)
        import torch.distributed as dist

        local = np.ascontiguousarray(local)
        largest = -(-n_samples // self.world_size)
        padded = np.zeros((largest,) + local.shape[1:], dtype=local.dtype)
        padded[:len(local)] = local
        tensor = torch.as_tensor(padded, device=self.device)
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        rows = [part.cpu().numpy()[:stop - start]
                for part, (start, stop) in zip(parts, (shard_bounds(n_samples, r, self.world_size)
                                                       for r in range(self.world_size)))]
        return np.concatenate(rows)

    def barrier(self):
        if self.active:
            import torch.distributed as dist

            dist.barrier()


SINGLE = Context()


def launched_by_torchrun():
    """True when the environment holds torchrun's RANK and WORLD_SIZE."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def from_environment(device_type="cpu"):
    """Join the process group torchrun described in the environment (``env://``) and return
    this process's :class:`Context`; :data:`SINGLE` when not launched by torchrun.

    ``device_type`` "cuda" uses NCCL with this process's GPU ``cuda:LOCAL_RANK``; "cpu" uses gloo.
    """
    if not launched_by_torchrun():
        return SINGLE
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", f"cuda:{local_rank}"
    else:
        backend, device = "gloo", "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Context(dist.get_rank(), dist.get_world_size(), local_rank, device, True)


def shutdown(context):
    """Leave the process group (at the end of a run): wait for every rank, then destroy it. Without
    the barrier a rank that left while another was still finishing its last collective sometimes
    aborted at exit in gloo's teardown ("terminate called without an active exception"). A
    script of one's own then ends with :func:`exit_process` (``vaegmm train`` does)."""
    if context.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def exit_process(code=0):
    """End this rank's process now, with ``code``, after flushing what it printed.

    Once a process has wrapped a model in DistributedDataParallel, torch (2.13) keeps the gloo
    process group, and its worker and transport threads, alive after
    :func:`torch.distributed.destroy_process_group`; tearing them down with the interpreter now and
    then aborted a rank at exit ("terminate called without an active exception": 1 run in 36 before
    :func:`shutdown` had its barrier, once in CI after), after all its work was done and written.
    A rank therefore ends with :func:`os._exit`, which skips that teardown: call it last, after
    :func:`shutdown`, once every file is closed. Python's own
    clean-up that matters is done first: logging is flushed, and multiprocessing's finalizers run
    (they release the named semaphores of locks such as tqdm's, which would otherwise be reported
    as leaked)."""
    import logging

    logging.shutdown()
    if "multiprocessing" in sys.modules:
        from multiprocessing import util

        util._run_finalizers()  # what multiprocessing runs at a normal exit, minus joining children
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing more to say
            stream.flush()
    os._exit(code)


class ShardedSweepData:
    """The per-datum half of a Gibbs sweep on this rank's shard (the interface of
    :class:`vaegmm.gibbs.NumpySweepData`): z of the shard drawn with :class:`CounterUniforms`, the
    log-likelihood and the sufficient statistics summed over ranks.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), all the (centred) data (the latents are small;
        only the shard's rows are used)
    n_components : int
    context : Context
    seed : int, the counter-based generator's key (the same on every rank)
    """

    def __init__(self, X, n_components, context, seed):
        from .gibbs import NumpySweepData

        self.n_samples, self.n_features = X.shape
        self.context = context
        self.start, self.stop = context.shard(self.n_samples)
        self.local = NumpySweepData(X[self.start:self.stop], n_components)
        self.uniforms = CounterUniforms(seed, self.start)

    def sample_labels(self, means, precisions_chol, log_weights, rng=None):
        """Draw z of the shard; return its labels (shard length) and log p(X | parameters) of all
        the data. ``rng`` is not used."""
        labels, log_likelihood = self.local.sample_labels(means, precisions_chol, log_weights, self.uniforms)
        return labels, float(self.context.all_reduce_sum(np.array([log_likelihood]))[0])

    def sufficient_statistics(self, labels):
        """counts (K,), sums (K, L), outer_sums (K, L, L) of all the data, from the shard's ``labels``."""
        counts, sums, outer_sums = self.local.sufficient_statistics(labels)
        flat = self.context.all_reduce_sum(np.concatenate([counts.ravel(), sums.ravel(), outer_sums.ravel()]))
        K, L = sums.shape
        return flat[:K], flat[K:K + K * L].reshape(K, L), flat[K + K * L:].reshape(K, L, L)

    def all_labels(self, labels):
        """The labels of all the data from every rank's shard labels."""
        return self.context.all_gather_rows(labels, self.n_samples)

    def share(self, *arrays):
        """Rank 0's float64 ``arrays`` (e.g. its draw of the parameters) on every rank."""
        flat = self.context.broadcast(np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]))
        shared, offset = [], 0
        for array in arrays:
            size = np.size(array)
            shared.append(flat[offset:offset + size].reshape(np.shape(array)))
            offset += size
        return shared
