"""How the benchmarks take time: the calling thread's CPU time, medians, runs alternated.

The development machine has 2 cores shared with other engineers' builds and tests.
Wall time there also counts the time other processes hold the core, and it falls
unevenly (a long run is preempted more often than a short one), which skews ratios.
Every timed path is single-threaded (our kernels, libfec, libaec, CharLS, zstd,
OpenCV set to one thread, sep, numpy/scipy), so the thread's CPU time is its cost
on one core. Cache and memory-bandwidth contention from the other core remain.
"""
import statistics
import time

clock = time.thread_time


def alternated_medians(*runs, repeats: int, warm: bool = True) -> list[float]:
    """Median CPU seconds of each run; each round calls every run in turn, so a
    disturbance lasting a round falls on all of them alike."""
    if warm:
        for run in runs:
            run()
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, series in zip(runs, times):
            start = clock()
            run()
            series.append(clock() - start)
    return [statistics.median(series) for series in times]
