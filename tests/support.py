"""Helpers shared by tests and benchmarks.

NullArchive keeps nothing: for tests about decoding, not storage (the real
archive has its own tests: tests/test_archive.py).
"""
import statistics
import time

from ground.archive import NullArchive  # noqa: F401


def median_seconds(fn, *args, repeats: int = 5) -> float:
    """Median wall time of `repeats` calls: the machines are shared, means mislead."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
