"""Helpers shared by tests and benchmarks."""
import statistics
import time


class NullArchive:
    """Takes what the ground decoder archives and keeps nothing: for benchmarks and
    tests about decoding, not storage (the real archive has its own tests:
    tests/test_archive.py). Every packet is new to it."""

    def packet(self, *args): return 1
    def housekeeping(self, *args): pass
    def event(self, *args): pass
    def detections(self, *args): pass
    def image(self, *args): pass
    def save_image(self, name, image): return name
    def commit(self): pass


def median_seconds(fn, *args, repeats: int = 5) -> float:
    """Median wall time of `repeats` calls: the machines are shared, means mislead."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return statistics.median(times)
