"""Speed and memory benchmarks; run each as a module from the repository root.

  python -m benchmarks.projections --preset=quick

``benchmarks.common`` holds the shared helpers (timing, machine info, JSON output, README
sections); results land in ``benchmarks/results/`` and tables in ``benchmarks/README.md``.
"""
