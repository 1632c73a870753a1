"""Side-by-side benchmarks: localq against raw apsw and the SQLite queue peers.

Run ``python -m benchmarks.run --help``.  The adapter protocol every backend
implements is documented in :mod:`benchmarks.common`; the workloads W1-W4 live in
:mod:`benchmarks.workloads`.
"""
