"""Benchmarks of vaegmm: ``python -m benchmarks [--quick] [--vae] [--end-to-end] [--json PATH]``.

- :mod:`benchmarks.gibbs` — one Gibbs sweep of :class:`vaegmm.GibbsGMM` (time and peak memory)
  against scikit-learn's ``BayesianGaussianMixture`` (per iteration) and against
  :mod:`benchmarks.reference_gibbs`, a straightforward re-implementation of the reference
  repository's sampler (N x N Mahalanobis diagonal per cluster, a Python loop per datum).
- :mod:`benchmarks.vae_epochs` — VAE epoch time per batch size on the embedded MNIST digits,
  and the accuracy each batch size reaches within a fixed time budget (opt-in, ``--vae``).
- :mod:`benchmarks.end_to_end` — the reference configuration against the defaults (opt-in,
  ``--end-to-end``).

Every figure is the median of several repeats. Timings are wall-clock (``time.perf_counter``);
memory is the peak of ``tracemalloc`` (every NumPy allocation is traced; BLAS work buffers and
the Python interpreter are not), above what was allocated before the measured call.
"""
